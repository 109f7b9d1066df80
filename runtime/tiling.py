"""Overlapping tiles for frames larger than the model input, and stitching tile maps back into one frame map.

Tiles are square, `tile_px` on a side, placed every `stride_px` pixels; the last row and column
of tiles is moved back to end at the frame's edge, so every pixel is covered without padding.
A frame smaller than one tile is an error rather than padded: padding would score pixels the
camera never saw, and the user is better served by resizing the frame or choosing a smaller tile.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgead.errors import ConfigError, DataError

Origin = tuple[int, int]  # (row, column) of a tile's top-left pixel


def tile_origins(height: int, width: int, tile_px: int, stride_px: int) -> list[Origin]:
    """Top-left (row, column) of every tile, row-major, the last row and column aligned to the frame's edge."""
    if tile_px < 1:
        raise ConfigError(f"tile_px={tile_px} must be at least 1")
    if not 1 <= stride_px <= tile_px:
        raise ConfigError(f"stride_px={stride_px} must be between 1 and tile_px={tile_px}, or tiles leave gaps")
    if height < tile_px or width < tile_px:
        raise DataError(
            f"frame {height}x{width} px is smaller than one {tile_px} px tile; "
            f"resize the frame or choose tile_px of at most {min(height, width)}"
        )
    rows = _starts(height, tile_px, stride_px)
    cols = _starts(width, tile_px, stride_px)
    return [(r, c) for r in rows for c in cols]


def _starts(size: int, tile_px: int, stride_px: int) -> list[int]:
    starts = list(range(0, size - tile_px + 1, stride_px))
    if starts[-1] != size - tile_px:
        starts.append(size - tile_px)  # the last tile ends at the edge; it overlaps its neighbour more
    return starts


def cut_tiles(frame: np.ndarray, tile_px: int, stride_px: int) -> tuple[np.ndarray, list[Origin]]:
    """Frame (H, W, C) or (H, W) -> tiles (T, tile_px, tile_px, C) or (T, tile_px, tile_px), and their origins."""
    if frame.ndim not in (2, 3):
        raise DataError(f"a frame must be (H, W) or (H, W, C), got shape {frame.shape}")
    origins = tile_origins(frame.shape[0], frame.shape[1], tile_px, stride_px)
    tiles = np.stack([frame[r : r + tile_px, c : c + tile_px] for r, c in origins])
    return tiles, origins


def coverage(origins: list[Origin], frame_hw: tuple[int, int], tile_px: int) -> np.ndarray:
    """(H, W) int32: how many tiles cover each pixel."""
    _check_origins(origins, frame_hw, tile_px)
    counts = np.zeros(frame_hw, dtype=np.int32)
    for r, c in origins:
        counts[r : r + tile_px, c : c + tile_px] += 1
    return counts


def stitch(tile_maps: np.ndarray, origins: list[Origin], frame_hw: tuple[int, int], tile_px: int) -> np.ndarray:
    """Tile maps (T, h, w) -> (H, W) float32 frame map, overlaps averaged.

    Maps at another size than the tile (e.g. at the model input size, when tiles were resized
    for the model) are first resized bilinearly to tile_px x tile_px. Every pixel must be covered.
    """
    if tile_maps.ndim != 3 or len(tile_maps) != len(origins):
        raise ConfigError(f"stitch needs one (h, w) map per origin: got maps {tile_maps.shape} for {len(origins)} origins")
    counts = coverage(origins, frame_hw, tile_px)
    if not counts.all():
        raise ConfigError(f"the tiles leave {int((counts == 0).sum())} of {counts.size} pixels uncovered; use tile_origins()")
    total = np.zeros(frame_hw, dtype=np.float64)  # fp64: a sum of n equal fp32 values divided by n is that value again
    for tile_map, (r, c) in zip(tile_maps, origins):
        if tile_map.shape != (tile_px, tile_px):
            tile_map = cv2.resize(tile_map.astype(np.float32), (tile_px, tile_px), interpolation=cv2.INTER_LINEAR)
        total[r : r + tile_px, c : c + tile_px] += tile_map
    return (total / counts).astype(np.float32)


def _check_origins(origins: list[Origin], frame_hw: tuple[int, int], tile_px: int) -> None:
    height, width = frame_hw
    for r, c in origins:
        if not (0 <= r <= height - tile_px and 0 <= c <= width - tile_px):
            raise ConfigError(f"tile origin ({r}, {c}) with tile_px={tile_px} does not fit in a {height}x{width} px frame")


class Patches:
    """Tiles of frames, cut lazily: (N, tile_px, tile_px, C) to the engine without an intermediate stack.

    Nothing is copied when patches are cut: each one is a strided view into its frame. `fill(out)` copies
    them once, straight into the engine's input (a contiguous array, or a CUDA slot's pinned buffer), a
    row of equally spaced patches at a time. Slicing gives the patches of one engine batch.
    """

    def __init__(self, frames: list[np.ndarray], origins: list[list[Origin]], tile_px: int) -> None:
        if len(frames) != len(origins):
            raise ConfigError(f"{len(frames)} frames but origins for {len(origins)}")
        self.frames = [np.ascontiguousarray(f) for f in frames]
        self.tile_px = tile_px
        which = [np.full(len(o), i, dtype=np.int64) for i, o in enumerate(origins)]
        self._index = np.concatenate(which) if which else np.empty(0, np.int64)
        self._origins = np.array([rc for o in origins for rc in o], dtype=np.int64).reshape(-1, 2)
        self._start, self._stop = 0, len(self._index)

    @classmethod
    def cut(cls, frames: list[np.ndarray], tile_px: int, stride_px: int) -> tuple[Patches, list[list[Origin]]]:
        """Every tile of every frame at `stride_px` (tile_origins), and each frame's origins."""
        for frame in frames:
            if frame.ndim not in (2, 3):
                raise DataError(f"a frame must be (H, W) or (H, W, C), got shape {frame.shape}")
        origins = [tile_origins(f.shape[0], f.shape[1], tile_px, stride_px) for f in frames]
        return cls(frames, origins, tile_px), origins

    def __len__(self) -> int:
        return self._stop - self._start

    @property
    def dtype(self) -> np.dtype:
        return self.frames[0].dtype if self.frames else np.dtype(np.uint8)

    @property
    def shape(self) -> tuple[int, ...]:
        tail = self.frames[0].shape[2:] if self.frames else ()
        return (len(self), self.tile_px, self.tile_px, *tail)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: slice) -> Patches:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("Patches are sliced in contiguous ranges (batch[start:stop])")
        start, stop, _ = index.indices(len(self))
        part = object.__new__(Patches)
        part.frames, part.tile_px, part._index, part._origins = self.frames, self.tile_px, self._index, self._origins
        part._start, part._stop = self._start + start, self._start + max(start, stop)
        return part

    def fill(self, out: np.ndarray) -> np.ndarray:
        """Copy the patches into `out[:len(self)]` (any writable array of that shape); returns that part of `out`."""
        n, t = len(self), self.tile_px
        if out.shape[0] < n or out.shape[1:] != self.shape[1:]:
            raise ConfigError(f"cannot fill {self.shape} patches into an array of shape {out.shape}")
        i = self._start
        while i < self._stop:
            j, step = self._run(i)
            frame = self.frames[self._index[i]]
            r, c = self._origins[i]
            windows = np.lib.stride_tricks.as_strided(  # (m, t, t, ...): patches c, c + step, ... of row r, a view
                frame[r:, c:], shape=(j - i, t, t, *frame.shape[2:]), strides=(step * frame.strides[1], *frame.strides), writeable=False
            )
            out[i - self._start : j - self._start] = windows
            i = j
        return out[:n]

    def _run(self, i: int) -> tuple[int, int]:
        """(end, column step) of the longest run from i of patches in one frame row at equal column steps."""
        frame, (row, col) = self._index[i], self._origins[i]
        step, j = 0, i + 1
        while j < self._stop and self._index[j] == frame and self._origins[j, 0] == row:
            gap = int(self._origins[j, 1] - self._origins[j - 1, 1])
            if gap <= 0 or (step and gap != step):
                break
            step, j = gap, j + 1
        return j, step

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.fill(np.empty(self.shape, dtype=self.dtype))
        return out if dtype is None else out.astype(dtype, copy=False)
