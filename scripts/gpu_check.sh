#!/usr/bin/env bash
# On a machine with a CUDA GPU: run what CI cannot — the GPU and TensorRT tests, FP16 TorchScript parity
# and speed against FP32 on the demo data, and the stream-scheduler benchmark. Uses the python on PATH
# (or $PYTHON) with edgead importable from this checkout; prints a short table at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="${PYTHONPATH:-}:$PWD/.gpu_path"
# the package-dir mapping of pyproject.toml as links, for a checkout that is not pip-installed (no internet there)
rm -rf .gpu_path && mkdir -p .gpu_path/edgead
for f in edgead/*.py; do ln -s "$PWD/$f" .gpu_path/edgead/; done
for sub in kit export runtime; do ln -s "$PWD/$sub" ".gpu_path/edgead/$sub"; done
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
"$PY" -m edgead.cli doctor | tee "$OUT/doctor.txt"
"$PY" -m pytest tests -m "gpu or tensorrt" -q -rs 2>&1 | tee "$OUT/gpu-tests.txt"
WORK="$(mktemp -d)"
"$PY" -m edgead.cli demo-data "$WORK/data" --category brick >/dev/null
"$PY" -m edgead.cli train "$WORK/data/brick" --out "$WORK/brick.edgead" -q
"$PY" -m edgead.cli export --model "$WORK/brick.edgead" --engine fp16 --format torchscript --check "$WORK/data/brick" | tee "$OUT/export-fp16.txt"
for precision in fp32 fp16; do
  for batch in 1 8; do
    "$PY" -m edgead.cli bench --model "$WORK/brick.edgead" --backend torchscript --device cuda --precision "$precision" --batch "$batch" --iterations 100 | tee "$OUT/bench-$precision-b$batch.txt"
  done
done
"$PY" -m edgead.cli eval "$WORK/data/brick" --model "$WORK/brick.edgead" --backend torchscript --device cuda --precision fp16 --json --quiet > "$OUT/eval-fp16.json"
"$PY" -m pytest benchmarks/test_bench_scheduler.py --benchmark-only --benchmark-json="$OUT/scheduler.json" -q 2>&1 | tail -15 | tee "$OUT/scheduler.txt"
