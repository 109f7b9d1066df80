#!/usr/bin/env bash
# On-device setup for a Jetson (JetPack 6.x: TensorRT 10 and CUDA 12 come with it).
# Makes ~/edgead-venv that sees JetPack's TensorRT, and installs edgead with ONNX Runtime and the cuda-python
# release of JetPack's CUDA (EDGEAD_CUDA_PYTHON overrides it).
# PyTorch (needed only for `edgead export`, which rebuilds the model from its weights) comes from
# NVIDIA's Jetson wheels: install it into the venv first, following NVIDIA's "PyTorch for Jetson" page.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${EDGEAD_VENV:-$HOME/edgead-venv}"
python3 -c "import tensorrt" 2>/dev/null || { echo "TensorRT's Python bindings are missing: install JetPack (sudo apt install nvidia-jetpack)"; exit 1; }
python3 -m venv --system-site-packages "$VENV"   # system site: JetPack's tensorrt module
"$VENV/bin/python" -m pip install --upgrade pip
# cuda-python of JetPack's CUDA (13.x needs a newer driver than JetPack 6 has): see cuda_python_pin.sh
CUDA_PYTHON="${EDGEAD_CUDA_PYTHON:-$(bash "$HERE/jetson/cuda_python_pin.sh")}"
"$VENV/bin/python" -m pip install -e "$HERE[onnx]" "$CUDA_PYTHON"
"$VENV/bin/edgead" doctor
echo "ready: source $VENV/bin/activate"
