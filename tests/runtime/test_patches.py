"""Stride-based patches: lazy cutting into the engine's input, accumulation into frame maps, the scheduler's order."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgead.errors import ConfigError, DataError
from edgead.runtime.postprocess import anomaly_maps
from edgead.runtime.predictor import Tiling, frame_maps, prepare_batch
from edgead.runtime.scheduler import PatchScheduler, stage
from edgead.runtime.tiling import Patches, cut_tiles, stitch


@st.composite
def frames_and_patching(draw):
    tile = draw(st.integers(3, 12))
    stride = draw(st.integers(1, tile))
    shapes = draw(st.lists(st.tuples(st.integers(tile, 3 * tile + 5), st.integers(tile, 3 * tile + 5)), min_size=1, max_size=3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    return frames, tile, stride


@settings(max_examples=40, deadline=None)
@given(frames_and_patching(), st.integers(1, 7))
def test_lazy_patches_are_the_tiles_in_any_batching(case, batch):
    frames, tile, stride = case
    patches, origins = Patches.cut(frames, tile, stride)
    want = np.concatenate([cut_tiles(f, tile, stride)[0] for f in frames])
    assert origins == [cut_tiles(f, tile, stride)[1] for f in frames]
    assert patches.shape == want.shape and np.array_equal(np.asarray(patches), want)
    for start in range(0, len(patches), batch):  # each engine batch copied into a reused (pinned-like) buffer
        buffer = np.full((batch, tile, tile, 3), 7, np.uint8)
        filled = stage(patches[start : start + batch], buffer)
        assert np.array_equal(filled, want[start : start + batch])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(4, 16), st.integers(0, 2**16))
def test_patches_at_stride_equal_to_their_size_reassemble_the_image(down, across, tile, seed):
    frame = np.random.default_rng(seed).integers(0, 256, (down * tile, across * tile, 3), dtype=np.uint8)
    patches, (origins,) = Patches.cut([frame], tile, tile)
    cut = np.asarray(patches)
    for channel in range(3):
        assert np.array_equal(stitch(cut[..., channel].astype(np.float32), origins, frame.shape[:2], tile), frame[..., channel])


@settings(max_examples=30, deadline=None)
@given(frames_and_patching(), st.floats(-1e3, 1e3, allow_nan=False, width=32), st.sampled_from([0.0, 1.5]))
def test_a_constant_per_patch_error_gives_a_constant_map(case, value, blur_sigma_px):
    frames, tile, stride = case
    tiling = object.__new__(Tiling)
    object.__setattr__(tiling, "tile_px", tile)
    object.__setattr__(tiling, "stride_px", stride)  # tiles under 16 px: the CLI refuses them, the law holds anyway
    batch = prepare_batch(frames, (tile, tile), tiling)
    grids = np.full((len(batch.images), tile, tile), value, np.float32)
    scores, maps = frame_maps(anomaly_maps(grids, (tile, tile), blur_sigma_px), batch, tiling, None)  # smoothed per patch, then stitched
    for frame, anomaly_map, score in zip(frames, maps, scores):
        assert anomaly_map.shape == frame.shape[:2]
        np.testing.assert_allclose(anomaly_map, value, rtol=1e-6, atol=1e-6)
        assert score == pytest.approx(value, rel=1e-6, abs=1e-6)


def test_frames_smaller_than_a_patch_or_strides_past_it_are_one_line_errors():
    with pytest.raises(DataError, match="smaller than one 63 px patch"):
        prepare_batch([np.zeros((40, 80, 3), np.uint8)], (63, 63), Tiling(63, 8), frame_px=(256, 256))
    with pytest.raises(ConfigError, match="between 1 and the tile size 63"):
        Tiling(63, 64)
    with pytest.raises(DataError, match="smaller than one 63 px tile"):
        Patches.cut([np.zeros((40, 80, 3), np.uint8)], 63, 8)


class StagingSlot:
    """Copies a batch into its own reused buffer at submit, like a pinned CUDA slot; finishes when the test says so."""

    def __init__(self, max_batch):
        self.buffer = np.zeros((max_batch, 5, 5, 3), np.uint8)
        self.n, self.done = 0, False

    def submit(self, batch):
        self.n, self.done = len(stage(batch, self.buffer)), False

    def ready(self):
        return self.done

    def wait(self):
        return self.buffer[: self.n].astype(np.int32).sum(axis=(1, 2, 3))  # one number per patch

    def close(self):
        pass


def test_the_scheduler_keeps_many_small_batches_of_patches_in_order():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (23, 31, 3), dtype=np.uint8) for _ in range(5)]
    patches, _ = Patches.cut(frames, 5, 2)
    slots = [StagingSlot(3) for _ in range(4)]
    finished = []
    with PatchScheduler(slots) as scheduler:
        for start in range(0, len(patches), 3):
            finished += scheduler.submit(patches[start : start + 3], start)
            slots[rng.integers(len(slots))].done = True  # slots finish in a random order
            finished += scheduler.poll()
        finished += scheduler.drain()
    assert [tag for tag, _ in finished] == list(range(0, len(patches), 3))
    want = np.asarray(patches).astype(np.int32).sum(axis=(1, 2, 3))
    assert np.array_equal(np.concatenate([out for _, out in finished]), want) and len(want) > 100


def test_one_score_per_patch_maps_are_what_resizing_and_smoothing_give():
    from edgead.runtime.postprocess import anomaly_maps

    grids = np.random.default_rng(0).normal(size=(5, 1, 1)).astype(np.float32)
    fast = anomaly_maps(grids, (63, 63), 4.0)
    slow = np.stack([anomaly_maps(np.repeat(np.repeat(g[None], 2, 1), 2, 2), (63, 63), 4.0)[0] for g in grids])  # 2x2 constant grids
    np.testing.assert_allclose(fast, slow, rtol=1e-6)
    assert fast.shape == (5, 63, 63)


def test_stage_copies_plain_arrays_too():
    batch = np.arange(2 * 5 * 5 * 3, dtype=np.uint8).reshape(2, 5, 5, 3)
    out = np.zeros((4, 5, 5, 3), np.uint8)
    assert np.array_equal(stage(batch, out), batch) and not out[2:].any()
