#!/usr/bin/env bash
# Create .venv (or reuse it) and install edgead with training, ONNX and test extras, at the versions
# the test suite last passed with: locks/py<MAJOR.MINOR>.txt, a pip constraints file (scripts/lock.sh
# refreshes it). torch is installed first as a CPU build pin, so the extras' torch range installs
# nothing more; bring your own CUDA torch by installing it into .venv before running this.
#   EDGEAD_UNLOCKED=1   install the newest versions the pyproject ranges allow instead (scripts/test.sh --latest)
#   VENV=DIR            another virtual environment than .venv
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
version=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
lock="locks/py$version.txt"
if [ "${EDGEAD_UNLOCKED:-0}" = 1 ]; then
  "$PY" -m pip install --quiet --upgrade pip setuptools wheel
  constraints=()
elif [ -f "$lock" ]; then
  # pip, setuptools and wheel at the locked versions too: the editable install is built without isolation
  # so that a new setuptools cannot change the build either
  "$PY" -m pip install --quiet $(grep -E '^(pip|setuptools|wheel)==' "$lock")
  constraints=(-c "$lock" --no-build-isolation)
else
  echo "setup: no lock for Python $version ($lock); installing the newest versions the pyproject ranges allow (untested)." >&2
  echo "setup: the tested lock is for Python $(ls locks | sed -n 's/^py\(.*\)\.txt$/\1/p' | paste -sd, -); make one for $version with: bash scripts/lock.sh" >&2
  "$PY" -m pip install --quiet --upgrade pip setuptools wheel
  constraints=()
fi
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet "${constraints[@]}" -e ".[train,onnx,dev]"
# the tritonserver binary that the Triton tests and benchmark serve with; --no-deps: nvidia-pytriton's own Python
# API (unused) pins numpy<2. A machine where it does not install skips those tests with the reason.
"$PY" -m pip install --quiet --no-deps "nvidia-pytriton==0.7.0" \
  || echo "setup: nvidia-pytriton did not install; the Triton server tests will be skipped" >&2
