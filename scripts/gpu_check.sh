#!/usr/bin/env bash
# On a machine with a CUDA GPU: run what CI cannot — the GPU and TensorRT tests; FP16 against FP32 on the demo
# data (parity, AUROC, latency) for TorchScript, the FP16 ONNX graph on ONNX Runtime's CUDA provider and, where
# onnxruntime-gpu has it, its TensorRT provider; TensorRT engines (FP16, INT8 from the Q/DQ graph) where
# TensorRT is installed; and the stream-scheduler benchmark. Uses the python on PATH (or $PYTHON) with edgead
# importable from this checkout; everything lands under gpu-check/ (or $OUT).
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
    "$PY" -m edgead.cli bench --model "$WORK/brick.edgead" --backend torchscript --trust-torchscript --device cuda --precision "$precision" --batch "$batch" --iterations 100 | tee "$OUT/bench-$precision-b$batch.txt"
  done
done
"$PY" -m edgead.cli eval "$WORK/data/brick" --model "$WORK/brick.edgead" --backend torchscript --trust-torchscript --device cuda --precision fp16 --json --quiet > "$OUT/eval-fp16.json"

# the FP16 ONNX graph (precision in the graph) on ONNX Runtime: CUDA provider, then TensorRT provider where present
"$PY" -m edgead.cli export --model "$WORK/brick.edgead" --engine fp16 --format onnx --check "$WORK/data/brick" | tee "$OUT/export-onnx-fp16.txt"
providers="CUDA"
if "$PY" -c "import onnxruntime as o, sys; sys.exit('TensorrtExecutionProvider' not in o.get_available_providers())"; then
  providers="CUDA TensorRT"
fi
for provider in $providers; do
  flag=$([ "$provider" = TensorRT ] && echo 1 || echo 0)
  for precision in fp32 fp16; do
    EDGEAD_ORT_TENSORRT=$flag "$PY" -m edgead.cli eval "$WORK/data/brick" --model "$WORK/brick.edgead" --backend onnxruntime --device cuda --precision "$precision" --json --quiet > "$OUT/eval-ort-$provider-$precision.json"
    for batch in 1 8; do
      EDGEAD_ORT_TENSORRT=$flag "$PY" -m edgead.cli bench --model "$WORK/brick.edgead" --backend onnxruntime --device cuda --precision "$precision" --batch "$batch" --iterations 100 | tee "$OUT/bench-ort-$provider-$precision-b$batch.txt"
    done
  done
done

# TensorRT engines from the typed graphs (strongly typed on TensorRT 10 and 11), where TensorRT is installed
if "$PY" -c "import tensorrt" 2>/dev/null; then
  "$PY" -m edgead.cli export --model "$WORK/brick.edgead" --engine fp16 --format tensorrt --check "$WORK/data/brick" | tee "$OUT/export-trt-fp16.txt"
  "$PY" -m edgead.cli export --model "$WORK/brick.edgead" --engine int8 --format tensorrt --check "$WORK/data/brick" | tee "$OUT/export-trt-int8.txt"
  for precision in fp16 int8; do
    "$PY" -m edgead.cli bench --model "$WORK/brick.edgead" --backend tensorrt --device cuda --precision "$precision" --batch 8 --iterations 100 | tee "$OUT/bench-trt-$precision-b8.txt"
  done
fi
"$PY" -m pytest benchmarks/test_bench_scheduler.py --benchmark-only --benchmark-json="$OUT/scheduler.json" -q 2>&1 | tail -15 | tee "$OUT/scheduler.txt"
