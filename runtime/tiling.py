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
