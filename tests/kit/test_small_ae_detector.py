"""The small patch auto-encoder end to end on a tiny category: training, both scorers, exported graphs, the CLI."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgead.artifact import Artifact, read_artifact
from edgead.cli import main
from edgead.config import SmallAEConfig
from edgead.errors import ConfigError
from edgead.export.bundle import write_trained
from edgead.kit.eager import eager_backends
from edgead.kit.small_ae_detector import DETECTOR, latent_codes, load_frames, random_patches
from edgead.runtime.datasets import open_dataset
from edgead.runtime.heads import with_scorer
from edgead.runtime.images import read_image
from edgead.runtime.inference import inference_manifest
from edgead.runtime.predictor import Predictor

TINY = dict(image_size_px=96, patch_stride_px=16, epochs=1, patches_per_epoch=64, batch_size=32, svm_patches=60, holdout_fraction=0.25)


@pytest.fixture(scope="module")
def small_ae(tiny_data_root, tmp_path_factory):
    """(trained, path): both scorers, reconstruction the default."""
    torch.set_num_threads(2)
    config = SmallAEConfig(scorer="reconstruction,support", **TINY)
    trained = DETECTOR.fit(open_dataset(tiny_data_root).train, config)
    path, _ = write_trained(trained, tmp_path_factory.mktemp("small_ae") / "small.edgead")
    return trained, path


def test_artifact_holds_the_patch_graph_both_scorers_and_the_svm(small_ae):
    trained, path = small_ae
    manifest = read_artifact(path).manifest
    assert manifest["method"] == "small-ae" and manifest["head"]["name"] == "reconstruction"
    assert set(manifest["scorers"]) == {"reconstruction", "support"}
    patches = inference_manifest(manifest, "patches")  # stride-based patches (dense is the default: test_small_ae_dense.py)
    assert patches["input"]["size_px"] == [63, 63] and patches["tiling"] == {"enabled": True, "patches": True, "tile_px": 63, "stride_px": 16}
    assert manifest["training"]["patches_per_frame"] == 16 and 1_000 < manifest["training"]["parameters"] < 50_000
    assert manifest["svm"]["dim"] == 16 * 17 * 17 and manifest["svm"]["count"] == trained.svm.support_vectors.shape[0]
    for scorer, view in [(s, v) for s in ("reconstruction", "support") for v in (manifest, patches)]:
        post = view["scorers"][scorer]["postprocess"]
        assert np.isfinite(post["image_threshold"])
        # the threshold is set for the false-alarm rate from the held-out images' scores (no refit per fold)
        calibration = post["calibration"]
        assert calibration["method"] == "held-out images" and calibration["false_alarm_rate"] == 0.01
        # each held-out image is scored with its nuisance copies
        assert calibration["images"] == post["holdout_images"] * (1 + trained.config.nuisance.copies)
        assert post["holdout_images"] == len(trained.holdout_images) >= 2
        assert post["image_threshold"] == calibration["threshold"] >= max(calibration["scores"])  # 0.01 < 1/N: above them all


def test_exported_patch_graph_matches_the_eager_one(small_ae):
    _, path = small_ae
    engines = read_artifact(path).manifest["engines"]
    assert {(e["graph"], e["format"]) for e in engines} == {(g, f) for g in ("patch", "dense") for f in ("onnx", "torchscript")}
    for entry in engines:
        assert entry["parity"]["max_rel_output_diff"] < 1e-4 and entry["parity"]["max_rel_score_diff"] < 1e-4
        assert entry["parity"]["images"] >= 1


@pytest.mark.parametrize("scorer", ["reconstruction", "support"])
def test_onnx_engine_scores_frames_as_the_eager_modules(small_ae, tiny_data_root, scorer):
    trained, path = small_ae
    artifact = read_artifact(path)
    images = [read_image(s.path) for s in open_dataset(tiny_data_root).test[:3]]
    with Predictor(artifact, eager_backends(artifact, trained.graphs), scorer=scorer, inference="patches") as eager:
        want = eager.predict(images)
    with Predictor(artifact, "onnxruntime", scorer=scorer, max_batch=5, inference="patches") as engine:  # many small batches through the scheduler
        got = engine.predict(images)
        assert engine.scoring_head.name == scorer
    for w, g in zip(want, got):
        assert g.anomaly_map.shape == (96, 96)
        np.testing.assert_allclose(g.anomaly_map, w.anomaly_map, rtol=1e-4, atol=1e-6 * np.abs(w.anomaly_map).max())


def test_support_head_scores_the_latent_codes_like_scikit_learn(small_ae, tiny_data_root):
    trained, path = small_ae
    from sklearn.svm import OneClassSVM

    # the SVM of training, fitted again by scikit-learn on the very same latent codes
    frames = load_frames(trained.train_images, trained.config.image_size_px, trained.config.nuisance, trained.config.seed)  # and their copies
    rng = np.random.default_rng([trained.config.seed, 7919])
    fitted_on = latent_codes(trained.autoencoder, random_patches(frames, trained.config.svm_patches, rng, augment=False))
    reference = OneClassSVM(kernel="rbf", gamma=trained.svm.gamma, nu=trained.svm.nu).fit(fitted_on.astype(np.float64))
    test_frames = load_frames([s.path for s in open_dataset(tiny_data_root).test[:4]], trained.config.image_size_px)
    codes = latent_codes(trained.autoencoder, random_patches(test_frames, 30, np.random.default_rng(3), augment=False))
    with Predictor(read_artifact(path), "onnxruntime", scorer="support", inference="patches") as predictor:
        got = predictor.head({"error": np.zeros((30, 63, 63), np.float32), "latent": codes.reshape(30, 16, 17, 17)})
    want = -reference.decision_function(codes.astype(np.float64))
    assert got.shape == (30, 1, 1)
    np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-5, atol=0)


def test_a_scorer_the_model_lacks_is_a_one_line_error(small_ae):
    _, path = small_ae
    artifact = read_artifact(path)
    manifest = json.loads(json.dumps(artifact.manifest))
    del manifest["scorers"]["support"]
    with pytest.raises(ConfigError, match="trained with the scorer\\(s\\) reconstruction only.*--scorer support"):
        with_scorer(Artifact(artifact.path, manifest, artifact.members), "support")


def test_cli_eval_bench_and_bad_input(small_ae, tiny_data_root, tmp_path):
    _, path = small_ae
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(tiny_data_root), "--model", str(path), "--scorer", "support", "--json", "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert "support" in metrics["backend"] and 0 <= metrics["aupro_0.3"] <= 1
    result = runner.invoke(main, ["bench", "--model", str(path), "--inference", "patches", "--iterations", "2", "--warmup", "1"])
    assert result.exit_code == 0, result.output
    assert "16 per image" in result.output
    good = tiny_data_root / "test" / "good"
    result = runner.invoke(main, ["run", "--images", str(good), "--model", str(path), "--headless", "--max-frames", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["frames"] == 2
    result = runner.invoke(main, ["eval", str(tiny_data_root), "--model", str(path), "--inference", "patches", "--stride", "64", "-q"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "between 1 and the tile size 63" in result.output
    small = tmp_path / "small.png"
    import cv2

    cv2.imwrite(str(small), np.zeros((40, 90, 3), np.uint8))
    result = runner.invoke(main, ["predict", str(small), "--model", str(path), "--inference", "patches", "--out", str(tmp_path / "p"), "-q"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "smaller than one 63 px patch" in result.output
    result = runner.invoke(main, ["train", str(tiny_data_root), "--method", "small-ae", "--patch-stride", "64", "--out", str(tmp_path / "x.edgead")])
    assert result.exit_code == 2 and "--patch-stride 64 px must be between 1 and the 63 px patch" in result.output
    result = runner.invoke(main, ["train", str(tiny_data_root), "--method", "small-ae", "--scorer", "knn", "--out", str(tmp_path / "x.edgead")])
    assert result.exit_code == 2 and "--scorer 'knn'" in result.output


def test_resume_after_an_interrupt_gives_the_uninterrupted_auto_encoder(tiny_data_root, tmp_path):
    from contextlib import contextmanager

    config = SmallAEConfig(image_size_px=96, patch_stride_px=33, epochs=2, patches_per_epoch=32, batch_size=16, holdout_fraction=0.25)
    paths = open_dataset(tiny_data_root).train

    @contextmanager
    def ctrl_c_in_epoch_2(label, total):
        if label.startswith("epoch 2/"):
            raise KeyboardInterrupt
        yield lambda n=1: None

    straight = DETECTOR.fit(paths, config, checkpoint=tmp_path / "a.ckpt")
    with pytest.raises(KeyboardInterrupt):
        DETECTOR.fit(paths, config, checkpoint=tmp_path / "b.ckpt", progress=ctrl_c_in_epoch_2)
    resumed = DETECTOR.fit(paths, config, checkpoint=tmp_path / "b.ckpt", resume=tmp_path / "b.ckpt")
    assert resumed.losses == straight.losses and len(straight.losses) == 2
    for a, b in zip(straight.autoencoder.state_dict().values(), resumed.autoencoder.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("train_on_copies", [False, True])
def test_nuisance_copies_set_the_threshold_and_train_the_auto_encoder_only_when_asked(tiny_data_root, monkeypatch, train_on_copies):
    import edgead.kit.small_ae_detector as module
    from edgead.config import NuisanceConfig

    loaded = []
    real = module.load_frames

    def spy(paths, size_px, nuisance=None, seed=0):
        frames = real(paths, size_px, nuisance, seed)
        loaded.append((len(paths), frames.shape[0]))
        return frames

    monkeypatch.setattr(module, "load_frames", spy)
    torch.set_num_threads(2)
    nuisance = NuisanceConfig(copies=2, jpeg=75, light=0, blur=0, noise=0, shift=0)
    config = SmallAEConfig(nuisance=nuisance, train_on_copies=train_on_copies, **TINY)
    trained = DETECTOR.fit(open_dataset(tiny_data_root).train, config)
    images, frames = loaded[0]  # the frames training patches are cut from
    assert frames == images * (3 if train_on_copies else 1)
    # either way the held-out images' copies are scored with them and set the threshold
    calibration = trained.calibrations["dense"]["reconstruction"]["calibration"]
    assert calibration["images"] == len(trained.holdout_images) * 3 and calibration["nuisance"]["copies"] == 2
    from edgead.kit.small_ae_detector import to_artifact_parts

    assert ("the auto-encoder trains on them" in " ".join(trained.summary(to_artifact_parts(trained)[0]))) == train_on_copies


def test_models_stored_before_calibration_only_copies_trained_on_their_copies():
    stored = SmallAEConfig(nuisance={"copies": 4}).to_dict()
    del stored["train_on_copies"]
    assert SmallAEConfig.from_dict(stored).train_on_copies is True
    assert SmallAEConfig().train_on_copies is False
