#!/usr/bin/env bash
# Train and evaluate every category of an MVTec-AD-layout root (MVTec AD itself, or demo/data),
# then write a results table. Extra arguments go to `edgead train` (e.g. --score-quantile 0.99).
#
#   bash scripts/eval_categories.sh ROOT OUT_DIR [train options...]
#
# OUT_DIR gets CATEGORY.edgead, CATEGORY.train.log, CATEGORY.json (the eval metrics) and results.md (one row per
# category and the mean). Uses `edgead` from PATH, else .venv/bin/edgead.
set -euo pipefail
ROOT="${1:?usage: scripts/eval_categories.sh ROOT OUT_DIR [train options...]}"
OUT="${2:?usage: scripts/eval_categories.sh ROOT OUT_DIR [train options...]}"
shift 2
HERE="$(cd "$(dirname "$0")/.." && pwd)"
EDGEAD="$(command -v edgead || echo "$HERE/.venv/bin/edgead")"
PY="$(dirname "$EDGEAD")/python"
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
found=0
for dir in "$ROOT"/*/; do
  [ -d "$dir/train/good" ] || continue
  category="$(basename "$dir")"
  found=1
  echo "== $category"
  "$EDGEAD" train "$dir" --out "$OUT/$category.edgead" --quiet "$@" > "$OUT/$category.train.log"
  "$EDGEAD" eval "$dir" --model "$OUT/$category.edgead" --json --quiet > "$OUT/$category.json"
done
[ "$found" = 1 ] || { echo "no category with train/good/ under $ROOT" >&2; exit 2; }
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
keys = ["image_auroc", "pixel_auroc", "aupro_0.3", "pixel_aupr", "image_f1_max"]
rows = [(p.stem, json.loads(p.read_text())) for p in sorted(out.glob("*.json"))]
lines = ["| category | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
for name, metrics in rows:
    lines.append(f"| {name} | " + " | ".join(f"{metrics[k]:.3f}" if k in metrics else "—" for k in keys) + " |")
means = [sum(m[k] for _, m in rows if k in m) / max(1, sum(k in m for _, m in rows)) for k in keys]
lines.append("| **mean** | " + " | ".join(f"**{v:.3f}**" for v in means) + " |")
(out / "results.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
