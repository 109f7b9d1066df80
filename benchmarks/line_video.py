"""The line as a user meets it: an MJPG video of an MVTec category's test crops (good and defective mixed), scored by
`edgead run --video ... --headless --events`, and the share of good and of defective frames flagged.

    python benchmarks/line_video.py demo/data/brick --model brick.edgead [--out DIR] [--json]

The frames are the category's test images in a seeded shuffle (each its own frame, at its own size), written with
OpenCV's MJPG encoder at its fixed quality (it ignores VIDEOWRITER_PROP_QUALITY; on demo brick a frame is off by
2.0 grey levels on average, between JPEG quality 50 and 75): on the demo data they come from another part of the
photo than the training crops, and the codec's artefacts are what a camera's stream adds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from edgead.runtime.images import list_images, read_image


def write_line_video(category: Path, out: Path, seed: int = 0) -> list[bool]:
    """Write the test images of `category` (MVTec layout) as an MJPG .avi; returns per frame whether it is defective."""
    test = Path(category) / "test"
    labelled = [(path, path.parent.name != "good") for kind in sorted(test.iterdir()) if kind.is_dir() for path in list_images(kind)]
    if not labelled:
        raise SystemExit(f"no test images under {test}")
    order = np.random.default_rng(seed).permutation(len(labelled))
    labelled = [labelled[i] for i in order]
    first = read_image(labelled[0][0])
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (first.shape[1], first.shape[0]))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write MJPG to {out}")
    try:
        for path, _ in labelled:
            image = read_image(path)
            if image.shape != first.shape:
                image = cv2.resize(image, (first.shape[1], first.shape[0]), interpolation=cv2.INTER_AREA)
            writer.write(np.ascontiguousarray(image[:, :, ::-1]))
    finally:
        writer.release()
    return [defective for _, defective in labelled]


def flagged_shares(labels: list[bool], events: Path) -> dict:
    """From `run --events`: frames flagged among good and among defective frames, and the drift events raised."""
    flagged, drift = set(), []
    for line in events.read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "anomaly":
            flagged.add(int(record["frame"]))
        else:
            drift.append(record["event"])
    good = [i for i, defective in enumerate(labels) if not defective]
    bad = [i for i, defective in enumerate(labels) if defective]
    return {
        "good_frames": len(good), "good_flagged": sum(i in flagged for i in good),
        "defective_frames": len(bad), "defective_flagged": sum(i in flagged for i in bad),
        "drift_events": drift,
    }


def run_line(category: Path, model: Path, out: Path, edgead: str = "edgead", extra: tuple[str, ...] = ()) -> dict:
    """Write the video, run `edgead run` on it headless, and return the flagged shares (and run's stdout/stderr)."""
    out.mkdir(parents=True, exist_ok=True)
    video, events = out / "line.avi", out / "events.jsonl"
    events.unlink(missing_ok=True)
    labels = write_line_video(category, video)
    done = subprocess.run([edgead, "run", "--video", str(video), "--model", str(model), "--headless", "--events", str(events),
                           "--backend", "onnxruntime", *extra], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"edgead run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result = flagged_shares(labels, events)
    result["stdout"], result["stderr"] = done.stdout, done.stderr
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("category", type=Path)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("line-video"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    edgead = str(Path(sys.executable).with_name("edgead"))
    result = run_line(args.category, args.model, args.out, edgead)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k not in ("stdout", "stderr")}))
    else:
        g, d = result["good_flagged"], result["defective_flagged"]
        print(f"{args.category.name}: good flagged {g} of {result['good_frames']} ({g / max(1, result['good_frames']):.2f}), "
              f"defective flagged {d} of {result['defective_frames']} ({d / max(1, result['defective_frames']):.2f}), "
              f"drift events {result['drift_events'] or 'none'}")


if __name__ == "__main__":
    main()
