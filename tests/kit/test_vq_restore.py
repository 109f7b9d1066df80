"""vq-restore: the prior's causality, codebook restarts, a tiny model trained, exported and restored through the runtime."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgead.artifact import read_artifact, write_artifact
from edgead.cli import main
from edgead.errors import ArtifactError, BackendError, ConfigError
from edgead.kit.pixelsnail import PixelSnailPrior
from edgead.kit.vq_config import VQRestoreConfig
from edgead.kit.vqvae import VectorQuantizer
from edgead.runtime.predictor import Predictor

TINY = dict(image_size_px=32, codebook_size=16, hidden_channels=16, prior_channels=16, epochs=2, prior_epochs=2, batch_size=4, holdout_fraction=0.25)


def test_the_prior_is_causal_changing_code_i_changes_no_logit_at_positions_up_to_i():
    torch.manual_seed(0)
    prior = PixelSnailPrior(8, (4, 5), channels=16, blocks=2).eval()
    codes = torch.randint(0, 8, (1, 4, 5))
    with torch.no_grad():
        before = prior(codes).flatten(2)
        for i in (0, 6, 12, 19):
            changed = codes.clone().view(1, -1)
            changed[0, i] = (changed[0, i] + 3) % 8
            after = prior(changed.view(1, 4, 5)).flatten(2)
            moved = (after - before).abs().amax(dim=1)[0]
            assert moved[: i + 1].max() == 0.0, f"code {i} leaks into positions <= {i}"
            if i < 19:
                assert moved[i + 1 :].max() > 0.0  # and the later positions do see it


def test_codebook_restart_revives_unused_codes():
    torch.manual_seed(0)
    data = torch.randn(2, 4, 8, 8) * 0.1
    for restart_below, revived in ((1.0, True), (0.0, False)):
        quantizer = VectorQuantizer(16, 4, restart_below=restart_below).train()
        with torch.no_grad():
            quantizer.embedding[:] = torch.randn(16, 4) * 0.1
            quantizer.embedding[8:] += 100.0  # codes 8..15 are nowhere near the data: never assigned
            quantizer.embedding_sum.copy_(quantizer.embedding)
        assert quantizer.assign(data).max() < 8
        for _ in range(3):
            quantizer(data)
        used = set(quantizer.assign(data).unique().tolist())
        assert bool(used & set(range(8, 16))) == revived
        assert (int(quantizer.restarts) > 0) == revived


def test_config_refuses_eta_out_of_range_and_a_bad_grid():
    with pytest.raises(ConfigError, match="out of range"):
        VQRestoreConfig(eta=1.0)
    with pytest.raises(ConfigError, match="divisible"):
        VQRestoreConfig(image_size_px=100)


def test_the_prior_refuses_a_grid_it_was_not_trained_for():
    prior = PixelSnailPrior(8, (4, 4), channels=16, blocks=1).eval()
    with pytest.raises(ConfigError, match=r"not the \(4, 4\) grid"):
        prior(torch.zeros(1, 5, 4, dtype=torch.int64))


@pytest.fixture(scope="module")
def tiny_vq(tiny_data_root, tmp_path_factory):
    """A pixel vq-restore model with the paper's restoration map trained by the CLI on the tiny category (eta calibrated), with ONNX and TorchScript engines."""
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("vq") / "vq.edgead"
    args = ["train", str(tiny_data_root), "--method", "vq-restore", "--latents", "pixels", "--out", str(out), "-q", "--anomaly-map", "restoration"]
    args += ["--image-size", "32", "--codebook-size", "16", "--epochs", "2", "--prior-epochs", "2", "--holdout", "0.25", "--batch-size", "4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "codebook:" in result.output and "of 16 codes used" in result.output
    assert "eta " in result.output and "masked copies" in result.output
    return out


def test_training_writes_three_graphs_with_parity(tiny_vq):
    manifest = read_artifact(tiny_vq).manifest
    assert set(manifest["graphs"]) == {"encoder", "prior", "decoder"}
    assert manifest["head"]["name"] == "restoration"
    assert {(e["graph"], e["backend"]) for e in manifest["engines"]} == {(g, b) for g in manifest["graphs"] for b in ("onnxruntime", "torchscript")}
    for entry in manifest["engines"]:
        graphs = entry["parity"]["graphs"]
        assert set(graphs) == {"encoder", "prior", "decoder"}
        assert graphs["encoder"]["codes_mismatch_fraction"] == 0.0
        assert graphs["prior"]["max_rel_output_diff"] < 1e-4 and graphs["decoder"]["max_rel_output_diff"] < 1e-4
    rest = manifest["restoration"]
    assert 0 < rest["eta"] < 1 and rest["grid"] == [4, 4]
    calibration = manifest["postprocess"]["calibration"]  # the threshold for the false-alarm rate, on held-out images
    assert calibration["method"] == "held-out images" and calibration["false_alarm_rate"] == 0.01
    assert manifest["postprocess"]["image_threshold"] == calibration["threshold"]
    assert 1 <= manifest["codebook"]["used"] <= 16


def _images(root):
    from edgead.runtime.datasets import open_dataset
    from edgead.runtime.images import read_image

    return [read_image(s.path) for s in open_dataset(root).test]


@pytest.mark.parametrize("mode", ["parallel", "exact"])
def test_onnx_runtime_restoration_matches_the_eager_one(tiny_vq, tiny_data_root, mode):
    from edgead.kit.eager import eager_backends
    from edgead.kit.vq_restore import DETECTOR

    artifact = read_artifact(tiny_vq)
    images = _images(tiny_data_root)
    options = {"restoration": mode, "eta": 0.2}  # a high eta: many codes are unlikely, so much is replaced
    with Predictor(artifact, backend="onnxruntime", head_options=options) as engine:
        got = engine.predict(images)
        got_changed = engine.scoring_head.last.changed
        assert engine.backends["prior"].name == "onnxruntime"
    with Predictor(artifact, eager_backends(artifact, DETECTOR.load_graphs(artifact)), head_options=options) as eager:
        want = eager.predict(images)
        want_changed = eager.scoring_head.last.changed
    assert want_changed.any()
    np.testing.assert_array_equal(got_changed, want_changed)
    np.testing.assert_allclose(np.stack([p.anomaly_map for p in got]), np.stack([p.anomaly_map for p in want]), atol=1e-4)


def test_exact_and_parallel_agree_when_no_code_is_unlikely(tiny_vq, tiny_data_root):
    artifact = read_artifact(tiny_vq)
    images = _images(tiny_data_root)
    maps = {}
    for mode in ("exact", "parallel"):
        with Predictor(artifact, backend="onnxruntime", head_options={"restoration": mode, "eta": 1e-30}) as predictor:
            maps[mode] = np.stack([p.anomaly_map for p in predictor.predict(images)])
            assert not predictor.scoring_head.last.changed.any()
    np.testing.assert_array_equal(maps["exact"], maps["parallel"])
    assert maps["exact"].max() == 0.0  # nothing restored: the restored decoding is the reconstruction itself


def test_the_head_refuses_a_grid_the_prior_was_not_trained_for(tiny_vq):
    artifact = read_artifact(tiny_vq)
    with Predictor(artifact, backend="onnxruntime") as predictor:
        with pytest.raises(ConfigError, match=r"not the \(4, 4\) grid the prior was trained for"):
            predictor.scoring_head.score({"codes": np.zeros((1, 5, 5), dtype=np.int64)})


def _without_prior(path, tmp_path, keep_graph):
    artifact = read_artifact(path)
    manifest = json.loads(json.dumps(artifact.manifest))
    dropped = {e["member"] for e in manifest["engines"] if e["graph"] == "prior"}
    manifest["engines"] = [e for e in manifest["engines"] if e["graph"] != "prior"]
    if not keep_graph:
        del manifest["graphs"]["prior"]
    members = {name: artifact.member(name) for name in manifest["members"] if name not in dropped}
    del manifest["members"]
    return write_artifact(tmp_path / f"no-prior-{keep_graph}.edgead", manifest, members)


@pytest.mark.parametrize("keep_graph, error, message", [(False, ArtifactError, "no 'prior' graph"), (True, BackendError, "no engine of graph 'prior'")])
def test_an_artifact_missing_one_of_its_graphs_is_a_one_line_error(tiny_vq, tmp_path, keep_graph, error, message):
    path = _without_prior(tiny_vq, tmp_path, keep_graph)
    with pytest.raises(error, match=message):
        Predictor(read_artifact(path), backend="onnxruntime")
    result = CliRunner().invoke(main, ["bench", "--model", str(path), "--iterations", "1", "--warmup", "0"])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_eval_predict_bench_and_run_with_either_restoration(tiny_vq, tiny_data_root, tmp_path):
    runner = CliRunner()
    for mode in ("exact", "parallel"):
        result = runner.invoke(main, ["eval", str(tiny_data_root), "--model", str(tiny_vq), "--restoration", mode, "--json", "-q"])
        assert result.exit_code == 0, result.output
        assert 0.0 <= json.loads(result.stdout)["image_auroc"] <= 1.0
    result = runner.invoke(main, ["predict", str(tiny_data_root / "test"), "--model", str(tiny_vq), "--out", str(tmp_path / "p"), "--restoration", "exact", "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["bench", "--model", str(tiny_vq), "--restoration", "parallel", "--iterations", "2", "--warmup", "1"])
    assert result.exit_code == 0 and "parallel, at most 1 prior pass," in result.output, result.output
    result = runner.invoke(main, ["run", "--images", str(tiny_data_root / "test" / "good"), "--model", str(tiny_vq), "--headless", "--json", "--restoration", "exact"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("eta", ["0", "1.5"])
def test_eta_out_of_range_is_a_one_line_error(tiny_vq, tiny_data_root, eta):
    result = CliRunner().invoke(main, ["eval", str(tiny_data_root), "--model", str(tiny_vq), "--eta", eta, "-q"])
    assert result.exit_code != 0 and "out of range" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_passes_with_exact_restoration_is_refused(tiny_vq, tiny_data_root):
    result = CliRunner().invoke(main, ["eval", str(tiny_data_root), "--model", str(tiny_vq), "--restoration", "exact", "--passes", "2", "-q"])
    assert result.exit_code != 0 and "--passes applies to --restoration parallel" in result.output


def test_restoration_options_are_refused_by_other_heads(tiny_trained, tiny_data_root):
    _, path = tiny_trained
    result = CliRunner().invoke(main, ["eval", str(tiny_data_root), "--model", str(path), "--restoration", "exact", "-q"])
    assert result.exit_code != 0 and "--restoration does not apply" in result.output


def test_patch_level_trains_on_the_small_auto_encoder_and_restores_through_onnx_runtime(tiny_data_root, tmp_path):
    """--level patch: the small patch auto-encoder's encoder/decoder quantised to a 17x17 grid, patches stitched
    into a frame-sized map; ONNX Runtime replaces the same codes as the eager graphs."""
    from edgead.kit.eager import eager_backends
    from edgead.kit.small_ae import SmallEncoder
    from edgead.kit.vq_config import VQRestoreConfig, build_autoencoder
    from edgead.kit.vq_restore import DETECTOR

    encoder, _ = build_autoencoder(VQRestoreConfig(level="patch", hidden_channels=16))
    assert isinstance(encoder, SmallEncoder)
    torch.set_num_threads(2)
    out = tmp_path / "vqp.edgead"
    args = ["train", str(tiny_data_root), "--method", "vq-restore", "--level", "patch", "--stride", "32", "--out", str(out), "-q",
            "--codebook-size", "16", "--epochs", "1", "--prior-epochs", "1", "--holdout", "0.25", "--batch-size", "8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    artifact = read_artifact(out)
    assert artifact.manifest["restoration"]["grid"] == [17, 17] and artifact.manifest["restoration"]["level"] == "patch"
    images = _images(tiny_data_root)[:3]
    options = {"restoration": "parallel", "eta": 0.2}
    with Predictor(artifact, backend="onnxruntime", head_options=options) as engine:
        got = engine.predict(images)
        got_changed = engine.scoring_head.last.changed
    with Predictor(artifact, eager_backends(artifact, DETECTOR.load_graphs(artifact)), head_options=options) as eager:
        want = eager.predict(images)
        want_changed = eager.scoring_head.last.changed
    assert got[0].anomaly_map.shape == images[0].shape[:2]
    assert want_changed.any()
    np.testing.assert_array_equal(got_changed, want_changed)
    np.testing.assert_allclose(np.stack([p.anomaly_map for p in got]), np.stack([p.anomaly_map for p in want]), atol=1e-4)


@pytest.mark.parametrize("kind", ["rectangles", "cutpaste", "mixed"])
def test_eta_calibration_copies_carry_one_defect_inside_their_mask(kind):
    from edgead.kit.vq_calibrate import defective_copies

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 48, 3), dtype=np.uint8) for _ in range(3)]
    copies, masks = defective_copies(images, np.random.default_rng(1), kind)
    assert len(copies) == len(masks) == 2 * len(images)
    for i, (copy, mask) in enumerate(zip(copies, masks)):
        original = images[i // 2]
        changed = (copy != original).any(axis=-1)
        assert mask.any() and mask.mean() < 0.05  # small defects
        assert not changed[~mask].any()  # nothing outside the mask moves
        assert changed[mask].mean() > 0.5
    rectangle = [((c == 0) | (c == 128)).all(axis=-1)[m].all() for c, m in zip(copies, masks)]
    assert rectangle == {"rectangles": [True] * 6, "cutpaste": [False] * 6, "mixed": [True, False] * 3}[kind]


def test_eta_defects_option_is_checked():
    with pytest.raises(ConfigError, match="eta-defects"):
        VQRestoreConfig(eta_defects="holes")
    result = CliRunner().invoke(main, ["train", ".", "--eta-defects", "cutpaste"])
    assert result.exit_code == 2 and "does not apply to --method patchcore" in result.output


def test_prior_epochs_default_by_level_and_stored_resolved():
    assert VQRestoreConfig(latents="pixels").prior_epochs == 100 and VQRestoreConfig(level="patch").prior_epochs == 200
    assert VQRestoreConfig().prior_epochs == 30  # feature latents
    assert VQRestoreConfig(level="patch", prior_epochs=3).prior_epochs == 3
    assert VQRestoreConfig.from_dict(VQRestoreConfig(level="patch").to_dict()).to_dict()["prior_epochs"] == 200


def test_map_defaults_to_likelihood_and_models_without_the_key_restore():
    pixels = VQRestoreConfig(latents="pixels")
    assert pixels.anomaly_map == "likelihood" and pixels.blur_sigma_px == 8.0
    assert VQRestoreConfig(level="patch").anomaly_map == "restoration" and VQRestoreConfig(level="patch", anomaly_map="likelihood").anomaly_map == "likelihood"
    old = pixels.to_dict()
    del old["anomaly_map"], old["blur_sigma_px"]
    assert VQRestoreConfig.from_dict(old).anomaly_map == "restoration" and VQRestoreConfig.from_dict(old).blur_sigma_px == 0.0
    with pytest.raises(ConfigError, match="--anomaly-map 'ssim'"):
        VQRestoreConfig(anomaly_map="ssim")


@pytest.fixture(scope="module")
def tiny_likelihood(tiny_data_root, tmp_path_factory):
    """A pixel vq-restore model with its default likelihood map, trained by the CLI on the tiny category."""
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("vq-likelihood") / "vq.edgead"
    args = ["train", str(tiny_data_root), "--method", "vq-restore", "--latents", "pixels", "--out", str(out), "-q"]
    args += ["--image-size", "32", "--codebook-size", "16", "--epochs", "2", "--prior-epochs", "2", "--holdout", "0.25", "--batch-size", "4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "-log p of each code" in result.output and "masked copies" not in result.output  # no eta search
    return out


def test_likelihood_map_is_the_priors_negative_log_likelihood_upsampled_and_smoothed(tiny_likelihood, tiny_data_root):
    from edgead.kit.eager import eager_backends
    from edgead.kit.vq_restore import DETECTOR, load_models
    from edgead.runtime.postprocess import anomaly_maps

    artifact = read_artifact(tiny_likelihood)
    manifest = artifact.manifest
    assert manifest["restoration"]["map"] == "likelihood" and manifest["postprocess"]["blur_sigma_px"] == 8.0
    images = _images(tiny_data_root)
    with Predictor(artifact, backend="onnxruntime") as engine:
        got = np.stack([p.anomaly_map for p in engine.predict(images)])
        assert engine.backends["prior"].name == "onnxruntime"
    with Predictor(artifact, eager_backends(artifact, DETECTOR.load_graphs(artifact))) as eager:
        want = np.stack([p.anomaly_map for p in eager.predict(images)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the same map from the training modules directly: -log p(z) of each code, bilinear to 32 px, Gaussian 8 px
    vqvae, prior = load_models(artifact)
    from edgead.kit.vq_restore import encode_all
    from edgead.runtime.preprocess import stack_batch

    batch = stack_batch(images, (32, 32))
    codes = encode_all(vqvae, batch, torch.device("cpu"))
    with torch.inference_mode():
        log_probs = torch.log_softmax(prior(torch.from_numpy(codes)), dim=1)
    nll = -log_probs.gather(1, torch.from_numpy(codes)[:, None]).squeeze(1).numpy()
    assert nll.min() >= 0 and nll.std() > 0
    np.testing.assert_allclose(want, anomaly_maps(nll, (32, 32), 8.0), rtol=1e-4, atol=1e-4)


def test_restoration_options_are_refused_by_a_likelihood_model(tiny_likelihood, tiny_data_root):
    result = CliRunner().invoke(main, ["eval", str(tiny_data_root), "--model", str(tiny_likelihood), "--eta", "0.01", "-q"])
    assert result.exit_code != 0 and "--eta applies to restoration maps" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["bench", "--model", str(tiny_likelihood), "--iterations", "2", "--warmup", "1"])
    assert result.exit_code == 0 and "code likelihood" in result.output, result.output


def test_a_manifest_without_the_map_key_restores_as_before(tiny_vq, tmp_path, tiny_data_root):
    artifact = read_artifact(tiny_vq)
    manifest = json.loads(json.dumps(artifact.manifest))
    del manifest["restoration"]["map"]
    members = {name: artifact.member(name) for name in manifest.pop("members")}
    old = read_artifact(write_artifact(tmp_path / "old.edgead", manifest, members))
    images = _images(tiny_data_root)
    with Predictor(old, backend="onnxruntime", head_options={"eta": 0.2}) as before, Predictor(artifact, backend="onnxruntime", head_options={"eta": 0.2}) as now:
        assert before.scoring_head.map == "restoration"
        np.testing.assert_array_equal(np.stack([p.anomaly_map for p in before.predict(images)]), np.stack([p.anomaly_map for p in now.predict(images)]))
        assert before.scoring_head.last.changed.any()


def test_blur_sigma_and_anomaly_map_options_reach_the_config():
    from edgead.cli import TRAIN_FLAGS
    from edgead.kit.detectors import build_config
    from edgead.kit.vq_restore import DETECTOR

    config = build_config(DETECTOR, {"blur_sigma_px": 4.0, "anomaly_map": "restoration"}, TRAIN_FLAGS)
    assert config.blur_sigma_px == 4.0 and config.anomaly_map == "restoration"
    with pytest.raises(ConfigError, match="--blur-sigma -1"):
        VQRestoreConfig(blur_sigma_px=-1)


def test_latents_default_by_level_stored_resolved_and_models_without_the_key_quantise_pixels():
    config = VQRestoreConfig()
    assert config.latents == "features" and config.anomaly_map == "restoration" and config.backbone == "efficientnet_lite0"
    assert (config.input_px, config.downsample, config.grid, config.codebook_size, config.blur_sigma_px) == (256, 16, (16, 16), 64, 4.0)
    pixels = VQRestoreConfig(latents="pixels")
    assert (pixels.input_px, pixels.downsample, pixels.grid, pixels.codebook_size) == (128, 8, (16, 16), 512)
    assert VQRestoreConfig(level="patch").latents == "pixels"
    old = pixels.to_dict()
    del old["latents"], old["backbone"]
    assert VQRestoreConfig.from_dict(old).latents == "pixels"
    assert VQRestoreConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="--latents features applies to --level image"):
        VQRestoreConfig(level="patch", latents="features")
    with pytest.raises(ConfigError, match="feature latents take 8 or 16 px per code"):
        VQRestoreConfig(downsample=4)
    with pytest.raises(ConfigError, match="--latents 'edges'"):
        VQRestoreConfig(latents="edges")


def test_kmeans_finds_separated_clusters():
    from edgead.kit.vq_features import kmeans

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32)
    points = np.concatenate([c + rng.normal(0, 0.1, (50, 2)) for c in centres]).astype(np.float32)
    found = kmeans(points, 3, seed=0)
    assert np.abs(np.sort(found, axis=0) - np.sort(centres, axis=0)).max() < 0.1
    with pytest.raises(ConfigError, match="more than the 150 training features"):
        kmeans(points, 151, seed=0)


@pytest.fixture(scope="module")
def tiny_features(tiny_data_root, tmp_path_factory):
    """A vq-restore model of feature latents (the default), trained by the CLI on the tiny category at 64 px (a 4x4 grid)."""
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("vq-features") / "vq.edgead"
    args = ["train", str(tiny_data_root), "--method", "vq-restore", "--out", str(out), "-q", "--image-size", "64",
            "--codebook-size", "16", "--prior-epochs", "2", "--holdout", "0.25", "--batch-size", "4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "k-means centres used" in result.output and "masked copies" in result.output  # eta calibrated
    return out


def test_feature_latents_export_encoder_and_prior_with_parity(tiny_features):
    manifest = read_artifact(tiny_features).manifest
    assert set(manifest["graphs"]) == {"encoder", "prior"}  # a code decodes to its centre: no decoder graph
    assert [t["name"] for t in manifest["graphs"]["encoder"]["outputs"]] == ["codes", "distances"]
    assert manifest["restoration"]["latents"] == "features" and manifest["restoration"]["grid"] == [4, 4]
    assert manifest["postprocess"]["blur_sigma_px"] == 4.0 and manifest["codebook"]["dim"] == 40 + 112
    for entry in manifest["engines"]:
        graphs = entry["parity"]["graphs"]
        assert graphs["encoder"]["codes_mismatch_fraction"] == 0.0 and graphs["encoder"]["max_rel_output_diff"] < 1e-4
        assert graphs["prior"]["max_rel_output_diff"] < 1e-4


def test_feature_restoration_map_is_the_distance_to_the_restored_codes_centre(tiny_features, tiny_data_root):
    from edgead.kit.eager import eager_backends
    from edgead.kit.vq_restore import DETECTOR, load_models
    from edgead.runtime.postprocess import anomaly_maps
    from edgead.runtime.preprocess import stack_batch
    from edgead.runtime.restoration import restore_parallel

    artifact = read_artifact(tiny_features)
    images = _images(tiny_data_root)
    options = {"eta": 0.2}  # a high eta: many codes are replaced
    with Predictor(artifact, backend="onnxruntime", head_options=options) as engine:
        got = np.stack([p.anomaly_map for p in engine.predict(images)])
        got_changed = engine.scoring_head.last.changed
    with Predictor(artifact, eager_backends(artifact, DETECTOR.load_graphs(artifact)), head_options=options) as eager:
        want = np.stack([p.anomaly_map for p in eager.predict(images)])
    assert got_changed.any()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # from the training modules directly: restore, then each feature's distance to its code's centre, to 64 px, Gaussian 4 px
    quantizer, prior = load_models(artifact)
    with torch.inference_mode():
        features = quantizer.embed(torch.from_numpy(stack_batch(images, (64, 64))))
        codes = torch.cdist(features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]), quantizer.codebook).argmin(1).view(len(images), 4, 4).numpy()

        def log_probs(c):
            return torch.log_softmax(prior(torch.from_numpy(c)), dim=1).permute(0, 2, 3, 1).numpy()

        restored = restore_parallel(codes, log_probs, 0.2, 1, 0, "argmax").codes
        centres = quantizer.codebook[torch.from_numpy(restored)]  # (N, 4, 4, C)
        distance = (features.permute(0, 2, 3, 1) - centres).norm(dim=-1).numpy()
    np.testing.assert_array_equal(restored != codes, got_changed)
    np.testing.assert_allclose(want, anomaly_maps(distance, (64, 64), 4.0), rtol=1e-4, atol=1e-4)


def test_feature_latents_refuse_decoding_in_one_line(tiny_features):
    with Predictor(read_artifact(tiny_features), backend="onnxruntime") as predictor:
        assert predictor.scoring_head.decoder is None and "feature distance" in predictor.scoring_head.describe()
        with pytest.raises(ConfigError, match="no decoder graph.*--latents pixels"):
            predictor.scoring_head.decode(np.zeros((1, 4, 4), dtype=np.int64))
