import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgead.errors import ConfigError, DataError
from edgead.runtime.tiling import coverage, cut_tiles, stitch, tile_origins


@st.composite
def frame_and_tiling(draw):
    """A frame size, a tile no larger than it, and a stride 1..tile."""
    tile = draw(st.integers(1, 24))
    height = draw(st.integers(tile, 80))
    width = draw(st.integers(tile, 80))
    stride = draw(st.integers(1, tile))
    return height, width, tile, stride


@settings(max_examples=60, deadline=None)
@given(tiles_down=st.integers(1, 4), tiles_across=st.integers(1, 4), tile=st.integers(1, 16), channels=st.sampled_from([0, 1, 3]), seed=st.integers(0, 10**6))
def test_stride_equal_to_tile_gives_back_the_input(tiles_down, tiles_across, tile, channels, seed):
    shape = (tiles_down * tile, tiles_across * tile) + ((channels,) if channels else ())
    frame = np.random.default_rng(seed).random(shape, dtype=np.float32)
    tiles, origins = cut_tiles(frame, tile, tile)
    assert len(origins) == tiles_down * tiles_across  # no extra edge tiles when the size is a multiple
    planes = [frame] if not channels else [frame[..., ch] for ch in range(channels)]
    for ch, plane in enumerate(planes):
        maps = tiles if not channels else tiles[..., ch]
        np.testing.assert_array_equal(stitch(maps, origins, plane.shape, tile), plane)


@settings(max_examples=200, deadline=None)
@given(frame_and_tiling())
def test_every_pixel_covered_and_origins_in_bounds(case):
    height, width, tile, stride = case
    origins = tile_origins(height, width, tile, stride)
    assert all(0 <= r <= height - tile and 0 <= c <= width - tile for r, c in origins)
    assert origins == sorted(origins)  # row-major
    assert len(set(origins)) == len(origins)
    assert coverage(origins, (height, width), tile).min() >= 1
    rows = sorted({r for r, _ in origins})
    assert rows[0] == 0 and rows[-1] == height - tile
    assert all(0 < b - a <= stride for a, b in zip(rows, rows[1:]))  # steps of the stride, the last one shorter


@settings(max_examples=100, deadline=None)
@given(frame_and_tiling(), st.floats(-1e6, 1e6, width=32), st.sampled_from([None, 1, 5]))
def test_stitching_constant_maps_gives_the_constant(case, value, map_px):
    height, width, tile, stride = case
    origins = tile_origins(height, width, tile, stride)
    side = tile if map_px is None else map_px  # maps at a lower resolution than the tile are resized up
    maps = np.full((len(origins), side, side), value, dtype=np.float32)
    out = stitch(maps, origins, (height, width), tile)
    assert out.shape == (height, width) and out.dtype == np.float32
    if map_px is None:
        np.testing.assert_array_equal(out, np.float32(value))  # averaging alone is exact (fp64 sums)
    else:
        np.testing.assert_allclose(out, np.float32(value), rtol=1e-6)  # OpenCV's bilinear weights round by an ulp


def test_overlaps_are_averaged():
    # 1 x 3 frame, tiles of 2 with stride 1: origins at columns 0 and 1, the middle pixel is covered twice
    origins = tile_origins(2, 3, 2, 1)
    assert origins == [(0, 0), (0, 1)]
    maps = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 4.0)]).astype(np.float32)
    np.testing.assert_array_equal(stitch(maps, origins, (2, 3), 2), [[1.0, 2.5, 4.0], [1.0, 2.5, 4.0]])
    np.testing.assert_array_equal(coverage(origins, (2, 3), 2), [[1, 2, 1], [1, 2, 1]])


def test_last_tiles_align_to_the_edge():
    assert tile_origins(10, 7, 4, 3) == [(r, c) for r in (0, 3, 6) for c in (0, 3)]
    assert tile_origins(4, 4, 4, 1) == [(0, 0)]


def test_cut_tiles_shapes_and_content():
    frame = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    tiles, origins = cut_tiles(frame, 4, 2)
    assert tiles.shape == (len(origins), 4, 4, 3) and tiles.dtype == np.uint8
    for tile, (r, c) in zip(tiles, origins):
        np.testing.assert_array_equal(tile, frame[r : r + 4, c : c + 4])


def test_lower_resolution_maps_are_resized_to_the_tile():
    origins = tile_origins(8, 8, 8, 8)
    ramp = np.tile(np.linspace(0, 1, 4, dtype=np.float32), (4, 1))[None]  # 4x4 map for an 8x8 tile
    out = stitch(ramp, origins, (8, 8), 8)
    assert out.shape == (8, 8)
    assert np.all(np.diff(out, axis=1) >= 0) and out[:, 0].max() < out[:, -1].min()


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((100, 100, 0, 1), ConfigError, "tile_px=0"),
        ((100, 100, 32, 0), ConfigError, "stride_px=0"),
        ((100, 100, 32, 33), ConfigError, "stride_px=33"),
        ((20, 100, 32, 16), DataError, "smaller than one 32 px tile.*at most 20"),
        ((100, 5, 32, 16), DataError, "resize the frame"),
    ],
)
def test_bad_tiling_arguments(args, error, match):
    with pytest.raises(error, match=match):
        tile_origins(*args)


def test_bad_stitch_arguments():
    origins = tile_origins(8, 8, 4, 4)
    with pytest.raises(ConfigError, match="one \\(h, w\\) map per origin"):
        stitch(np.zeros((3, 4, 4), np.float32), origins, (8, 8), 4)
    with pytest.raises(ConfigError, match="uncovered"):
        stitch(np.zeros((1, 4, 4), np.float32), origins[:1], (8, 8), 4)
    with pytest.raises(ConfigError, match="does not fit"):
        stitch(np.zeros((1, 4, 4), np.float32), [(5, 0)], (8, 8), 4)
    with pytest.raises(DataError, match="\\(H, W\\) or \\(H, W, C\\)"):
        cut_tiles(np.zeros((2, 8, 8, 3)), 4, 4)


@settings(max_examples=50, deadline=None)
@given(frame_and_tiling(), st.integers(0, 10**6))
def test_stitch_is_the_mean_of_the_covering_tiles(case, seed):
    height, width, tile, stride = case
    origins = tile_origins(height, width, tile, stride)
    maps = np.random.default_rng(seed).random((len(origins), tile, tile), dtype=np.float32)
    sums, counts = np.zeros((height, width)), np.zeros((height, width))
    for tile_map, (r, c) in zip(maps, origins):
        sums[r : r + tile, c : c + tile] += tile_map
        counts[r : r + tile, c : c + tile] += 1
    np.testing.assert_allclose(stitch(maps, origins, (height, width), tile), sums / counts, rtol=1e-6)
