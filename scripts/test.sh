#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. Extra arguments go to pytest.
#   bash scripts/test.sh            the locked versions (locks/), in .venv: what CI runs
#   bash scripts/test.sh --latest   the newest versions the pyproject ranges allow, in .venv-latest, and
#                                   which of them differ from the lock: run it now and then, outside CI,
#                                   to see whether the lock can move forward (bash scripts/lock.sh moves it)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--latest" ]; then
  shift
  rm -rf .venv-latest
  VENV=.venv-latest EDGEAD_UNLOCKED=1 bash scripts/setup.sh
  version=$(.venv-latest/bin/python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  echo "versions that differ from locks/py$version.txt (lock -> latest):"
  .venv-latest/bin/python scripts/lock_diff.py "locks/py$version.txt" || true
  exec .venv-latest/bin/python -m pytest tests "$@"
fi
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests "$@"
