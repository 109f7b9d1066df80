#!/usr/bin/env bash
# The comparison harness's own venv (benchmarks/anomalib/.venv, git-ignored): anomalib 2.7 with torch and
# torchvision from PyPI (~5.7 GB; the CUDA build, which runs on the CPU), timm, and edgead without its
# dependencies (for the dataset reader and the metrics only). Where a local wheel folder or a pip cap
# pins torch to a build whose torchvision does not import, run pip with --isolated.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/pip install --quiet "anomalib==2.7.0" timm click
.venv/bin/pip install --quiet --no-deps -e ../..
