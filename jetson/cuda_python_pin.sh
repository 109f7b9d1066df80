#!/usr/bin/env bash
# Prints the cuda-python requirement for this device's CUDA, e.g. "cuda-python>=12.6,<12.7" on JetPack 6.1/6.2
# (CUDA 12.6) and "cuda-python>=12.2,<12.3" on JetPack 6.0 (CUDA 12.2).
# Why not the newest: cuda-python 13 needs a CUDA 13 driver (580+), and JetPack 6's is CUDA 12.2/12.6 (r36,
# driver 540); even a newer CUDA 12 runtime (cuda-python 12.9 links cudart 12.9 statically) fails on an Orin with
# cudaErrorInsufficientDriver (35) unless NVIDIA's cuda-compat package of that release is installed. The 12.2 and
# 12.6 releases of cuda-python publish cp310 manylinux2014_aarch64 wheels (checked with pip download).
# Reads ${CUDA_HOME:-/usr/local/cuda}/version.json, else `nvcc --version`.
set -euo pipefail
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
version=""
if [ -f "$cuda_home/version.json" ]; then
  version=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["cuda"]["version"])' "$cuda_home/version.json" 2>/dev/null || true)
fi
if [ -z "$version" ] && command -v nvcc >/dev/null 2>&1; then
  version=$(nvcc --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
fi
if ! [[ "$version" =~ ^([0-9]+)\.([0-9]+) ]]; then
  echo "cannot read this device's CUDA version (from $cuda_home/version.json or nvcc): install JetPack's CUDA, or set EDGEAD_CUDA_PYTHON to the cuda-python requirement" >&2
  exit 2
fi
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
echo "cuda-python>=${major}.${minor},<${major}.$((minor + 1))"
