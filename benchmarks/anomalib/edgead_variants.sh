#!/usr/bin/env bash
# edgead on every category of ROOT under one set of `edgead train` options per call, one line per category
# appended to benchmarks/anomalib/results-edgead.jsonl (metrics of `edgead eval`, training seconds, bank size).
#
#   bash benchmarks/anomalib/edgead_variants.sh ROOT NAME [train options...]
#   e.g. bash benchmarks/anomalib/edgead_variants.sh demo/data nearest --map-upsample nearest
set -euo pipefail
ROOT="${1:?usage: edgead_variants.sh ROOT NAME [train options...]}"
NAME="${2:?usage: edgead_variants.sh ROOT NAME [train options...]}"
shift 2
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$(mktemp -d)"
bash "$HERE/../../scripts/eval_categories.sh" "$ROOT" "$OUT" "$@" > "$OUT/run.log"
PY="$HERE/../../.venv/bin/python"
"$PY" - "$OUT" "$NAME" "$*" >> "$HERE/results-edgead.jsonl" <<'PYEOF'
import json, sys, time
from pathlib import Path

from edgead.artifact import read_artifact

out, name, options = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for path in sorted(out.glob("*.json")):
    metrics = json.loads(path.read_text())
    manifest = read_artifact(out / f"{path.stem}.edgead").manifest
    timings = manifest["training"]["timings_s"]
    print(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M"), "variant": name, "options": options, "category": path.stem,
        **{k: metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro_0.3", "pixel_aupr", "image_f1_max", "image_f1_at_threshold", "per_type_image_auroc")},
        "train_s": sum(timings.values()), "coreset_s": timings["coreset"], "bank": manifest["memory_bank"]["count"],
    }))
PYEOF
tail -n 3 "$HERE/results-edgead.jsonl"
rm -rf "$OUT"
