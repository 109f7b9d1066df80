#!/usr/bin/env bash
# Build and verify TensorRT engines ON THE DEVICE that will run them (engines are tied to the
# TensorRT version and the GPU): FP16, and INT8 when calibration images are given; each engine
# is checked against the eager FP32 model (parity report) and timed.
#
#   jetson/build_engines.sh MODEL.edgead [CALIB_DIR] [LABELLED_DATA_DIR]
#
# CALIB_DIR: good images for INT8 calibration. LABELLED_DATA_DIR: an MVTec-layout folder whose
# test images give image AUROC per engine (the export warns if FP16/INT8 lose more than 0.005).
set -euo pipefail
MODEL="${1:?usage: jetson/build_engines.sh MODEL.edgead [CALIB_DIR] [LABELLED_DATA_DIR]}"
CALIB="${2:-}"
CHECK="${3:-}"
check_args=()
[ -n "$CHECK" ] && check_args=(--check "$CHECK")
edgead doctor
edgead export --model "$MODEL" --engine fp16 --format tensorrt --batch-range 1:4:16 "${check_args[@]}"
if [ -n "$CALIB" ]; then
  edgead export --model "$MODEL" --engine int8 --format tensorrt --batch-range 1:4:16 --calib "$CALIB" "${check_args[@]}"
fi
for precision in fp16 ${CALIB:+int8}; do
  for batch in 1 4; do
    edgead bench --model "$MODEL" --backend tensorrt --device cuda --precision "$precision" --batch "$batch" --iterations 200
  done
done
edgead bench --model "$MODEL" --backend onnxruntime --device cpu --batch 1 --iterations 20
