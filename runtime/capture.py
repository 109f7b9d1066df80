"""`edgead capture`: good frames from the very source `run` will read, saved as lossless PNGs for `train` or `enroll`.

Frames come through `open_source`, the decode path of `run` (same backend, same resolution, same
compression artefacts), so a model trained on them sees what it will score. PNG keeps every pixel
as decoded: `read_image` of a captured file gives back exactly the frame that `run` would score.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edgead.errors import ConfigError
from edgead.runtime.images import write_image
from edgead.runtime.sources import Frame


@dataclass(frozen=True)
class CaptureSummary:
    """What was written: how many frames, where, their sizes (H, W), and how many frames the source gave."""

    folder: Path
    saved: list[Path]
    sizes_hw: tuple[tuple[int, int], ...]
    frames_seen: int
    stopped_by: str  # "count", "end" or "interrupt"


def capture_frames(
    source: Iterable[Frame],
    out: Path,
    count: int = 100,
    every_s: float = 0.0,
    prefix: str | None = None,
    on_saved: Callable[[int], object] | None = None,
) -> CaptureSummary:
    """Save up to `count` frames of `source` into `out`, at least `every_s` seconds of source time apart.

    Files are `<prefix>-000000.png`, ... (prefix: `capture-<UTC time>` so that captures never overwrite
    each other). Ctrl-C ends the capture with the frames saved so far.
    """
    if count < 1:
        raise ConfigError(f"--count must be >= 1, got {count}")
    if every_s < 0:
        raise ConfigError(f"--every must be >= 0 seconds, got {every_s}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = prefix or time.strftime("capture-%Y%m%dT%H%M%SZ", time.gmtime())
    saved: list[Path] = []
    sizes: set[tuple[int, int]] = set()
    seen, last_s, stopped_by = 0, None, "end"
    try:
        for frame in source:
            seen += 1
            if last_s is not None and frame.timestamp_s - last_s < every_s:
                continue
            path = out / f"{prefix}-{len(saved):06d}.png"
            write_image(path, frame.image)
            saved.append(path)
            sizes.add(tuple(frame.image.shape[:2]))
            last_s = frame.timestamp_s
            if on_saved:
                on_saved(len(saved))
            if len(saved) >= count:
                stopped_by = "count"
                break
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    return CaptureSummary(out, saved, tuple(sorted(sizes)), seen, stopped_by)
