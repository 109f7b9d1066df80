#!/usr/bin/env bash
# Set up, then run the main job end to end on the bundled demo data:
# build the data, train, evaluate (with an HTML report), predict with overlays.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CATEGORY="${1:-brick}"
mkdir -p demo
cd demo
../.venv/bin/edgead demo-data data
../.venv/bin/edgead train "data/$CATEGORY" --out "$CATEGORY.edgead"
../.venv/bin/edgead eval "data/$CATEGORY" --report "report-$CATEGORY.html"
../.venv/bin/edgead eval "data/$CATEGORY" --json --quiet > "metrics-$CATEGORY.json"
../.venv/bin/edgead predict "data/$CATEGORY/test" --out "predictions-$CATEGORY" --overlays
echo
echo "done: open demo/report-$CATEGORY.html; overlays in demo/predictions-$CATEGORY/overlays/"
