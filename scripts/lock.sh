#!/usr/bin/env bash
# Move the lock forward on purpose: `scripts/test.sh --latest` (the newest versions the pyproject ranges allow,
# in a fresh .venv-latest, and the test suite there), and only if it passes write locks/py<MAJOR.MINOR>.txt from
# that environment. Review the diff (git diff locks/) and commit it with the test counts.
#   bash scripts/lock.sh              refresh the lock for python3
#   PYTHON=python3.12 bash scripts/lock.sh   for another interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test.sh --latest -q -p no:cacheprovider
version=$(.venv-latest/bin/python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
.venv-latest/bin/python scripts/lock_diff.py --write "locks/py$version.txt"
echo "wrote locks/py$version.txt: review with git diff locks/, then bash scripts/test.sh to install it into .venv"
