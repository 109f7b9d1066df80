"""Frames larger than the model input: tiles at a stride, scored through the scheduler, stitched back."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgead.artifact import read_artifact
from edgead.cli import main
from edgead.config import PatchCoreConfig
from edgead.errors import ConfigError
from edgead.export.bundle import write_trained
from edgead.kit.demo_data import make_demo_dataset
from edgead.kit.patchcore import fit_patchcore
from edgead.runtime.datasets import open_dataset
from edgead.runtime.images import read_image
from edgead.runtime.predictor import Predictor, Tiling, tiling_from

SIZE = 128


def test_one_tile_equals_whole_frame_scoring(tiny_trained, tiny_data_root):
    _, path = tiny_trained
    image = read_image(open_dataset(tiny_data_root).test[-1].path)  # a defective image, 128 px
    art = read_artifact(path)
    with Predictor(art, tiling=False) as whole, Predictor(art, tiling=Tiling(SIZE, SIZE)) as tiled:
        a, b = whole.predict([image])[0], tiled.predict([image])[0]
    assert a.score == pytest.approx(b.score, rel=1e-6)
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-6)


def test_large_frame_is_tiled_and_stitched_at_its_own_size(tiny_trained, tiny_data_root):
    _, path = tiny_trained
    samples = open_dataset(tiny_data_root).test
    good = read_image(samples[0].path)
    bad = read_image(samples[-1].path)
    frame = np.concatenate([np.concatenate([good, good], axis=1), np.concatenate([good, bad], axis=1)], axis=0)
    art = read_artifact(path)
    # stride = tile: each quadrant is one tile, scored exactly as the image alone
    with Predictor(art, tiling=Tiling(SIZE, SIZE), max_batch=3) as predictor:
        (pred,) = predictor.predict([frame])
    with Predictor(art, tiling=False) as whole:
        bad_alone = whole.predict([bad])[0]
    assert pred.anomaly_map.shape == (2 * SIZE, 2 * SIZE)
    np.testing.assert_allclose(pred.anomaly_map[SIZE:, SIZE:], bad_alone.anomaly_map, rtol=1e-5)
    assert pred.score == pytest.approx(float(pred.anomaly_map.max()))
    # overlapping tiles (stride half the tile): 9 tiles, overlaps averaged, the map still at the frame's size
    with Predictor(art, tiling=Tiling(SIZE, SIZE // 2), max_batch=4) as predictor:
        assert predictor.prepare([frame]).images.shape[0] == 9
        (overlapped,) = predictor.predict([frame])
    assert overlapped.anomaly_map.shape == (2 * SIZE, 2 * SIZE) and np.isfinite(overlapped.anomaly_map).all()


def test_train_with_tiles_and_use_the_manifest_tiling(tmp_path):
    (root,) = make_demo_dataset(tmp_path, categories=("brick",), size_px=192, n_train=6, n_test_good=2, n_test_defect=3, seed=1)
    config = PatchCoreConfig(image_size_px=SIZE, tile_px=SIZE, stride_px=64, coreset_fraction=0.25, holdout_fraction=0.34)
    fitted = fit_patchcore(open_dataset(root).train, config)
    path, manifest = write_trained(fitted, tmp_path / "tiled.edgead")
    assert manifest["tiling"] == {"enabled": True, "tile_px": SIZE, "stride_px": 64}
    assert tiling_from(manifest, None, None) == Tiling(SIZE, 64)
    result = CliRunner().invoke(main, ["predict", str(root / "test"), "--model", str(path), "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 5
    result = CliRunner().invoke(main, ["eval", str(root), "--model", str(path), "--json", "--tile", "96", "--stride", "48"])
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.stdout)["pixel_auroc"] <= 1


def test_tiling_options_are_checked(tiny_trained):
    _, path = tiny_trained
    manifest = read_artifact(path).manifest
    assert tiling_from(manifest, None, None) is None
    assert tiling_from(manifest, 64, None) == Tiling(64, 64)
    with pytest.raises(ConfigError, match="stride"):
        tiling_from(manifest, 64, 65)
    with pytest.raises(ConfigError, match="--stride needs --tile"):
        PatchCoreConfig(stride_px=32)


@pytest.mark.parametrize("extra, size", [([], 48), (["--image-size", "64"], 64)])
def test_train_with_tiles_feeds_them_at_their_own_size_unless_told(tiny_data_root, tmp_path, extra, size):
    """--tile 40 without --image-size: tiles go to the model at 48 px (40 rounded up to 16), not enlarged to 256."""
    out = tmp_path / "m.edgead"
    result = CliRunner().invoke(main, ["train", str(tiny_data_root), "--tile", "40", "--stride", "32", "--coreset", "0.05", "--out", str(out), "-q", *extra])
    assert result.exit_code == 0, result.output
    manifest = read_artifact(out).manifest
    assert manifest["config"]["image_size_px"] == size and manifest["tiling"]["tile_px"] == 40
    assert manifest["input"]["size_px"] == [size, size]
