"""The README's table from the harness's result logs: the latest anomalib run and the latest edgead VARIANT run per category.

    .venv/bin/python benchmarks/anomalib/table.py [VARIANT]   (default: "defaults")
    .venv/bin/python benchmarks/anomalib/table.py --effects     every edgead variant and anomalib, per category
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def latest(path: Path, **match) -> dict[str, dict]:
    rows = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        row = json.loads(line)
        if all(row.get(k) == v for k, v in match.items()) and "image_auroc" in row:
            rows[row["category"]] = row  # later lines win
    return rows


def effects() -> None:
    """One row per edgead variant (and anomalib): image AUROC / pixel AUROC / AUPRO per category."""
    rows: dict[str, dict[str, dict]] = {}
    for line in (HERE / "results-edgead.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(f"edgead {row['variant']} `{row['options']}`", {})[row["category"]] = row
    rows = {"anomalib 2.7 PatchCore": latest(HERE / "results.jsonl", normalisation="(x-127)/128", num_neighbors=9, image_size_px=256), **rows}
    categories = sorted({c for per in rows.values() for c in per})
    print("| setting | " + " | ".join(f"{c} (image / pixel AUROC / AUPRO)" for c in categories) + " |")
    print("|---" * (len(categories) + 1) + "|")
    for name, per in rows.items():
        cells = [f"{per[c]['image_auroc']:.3f} / {per[c]['pixel_auroc']:.3f} / {per[c]['aupro_0.3']:.3f}" if c in per else "—" for c in categories]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    if sys.argv[1:] == ["--effects"]:
        return effects()
    variant = sys.argv[1] if len(sys.argv) > 1 else "defaults"
    anomalib = latest(HERE / "results.jsonl", normalisation="(x-127)/128", num_neighbors=9, image_size_px=256)
    edgead = latest(HERE / "results-edgead.jsonl", variant=variant)
    print("| category | method | image AUROC | pixel AUROC | AUPRO (0.3) | training (s) |")
    print("|---|---|---|---|---|---|")
    for category in sorted(set(anomalib) | set(edgead)):
        for name, row in (("anomalib 2.7 PatchCore", anomalib.get(category)), (f"edgead ({variant})", edgead.get(category))):
            if row:
                print(f"| {category} | {name} | {row['image_auroc']:.3f} | {row['pixel_auroc']:.3f} | {row['aupro_0.3']:.3f} | {row['train_s']:.0f} |")


if __name__ == "__main__":
    main()
