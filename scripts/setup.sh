#!/usr/bin/env bash
# Create .venv (or reuse it) and install edgead with training, ONNX and test extras.
# torch is installed first as a CPU build pin, so the extras' torch range installs nothing more;
# bring your own CUDA torch by installing it into .venv before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[train,onnx,dev]"
