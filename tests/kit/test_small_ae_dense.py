"""Dense inference of the small patch auto-encoder: the whole frame through the convolutions once, against stride-based patches."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from edgead.artifact import read_artifact
from edgead.cli import main
from edgead.config import SmallAEConfig
from edgead.errors import ConfigError
from edgead.export.bundle import write_trained
from edgead.export.onnx import export_onnx, fixed_axes, graph_io
from edgead.graphs import graph_specs
from edgead.kit.eager import eager_backends
from edgead.kit.small_ae import DenseGraph, PatchGraph, SmallAutoEncoder, dense_latent_px
from edgead.kit.small_ae_detector import DENSE_SVM_WINDOW, DETECTOR, graph_specs_of, load_frames
from edgead.runtime.datasets import open_dataset
from edgead.runtime.heads.support import coverage_mean, patch_starts
from edgead.runtime.images import read_image
from edgead.runtime.heads import with_scorer
from edgead.runtime.inference import with_inference
from edgead.runtime.predictor import Predictor, Tiling
from edgead.runtime.tiling import stitch, tile_origins

TINY = dict(image_size_px=96, patch_stride_px=8, epochs=1, patches_per_epoch=64, batch_size=32, svm_patches=60, holdout_fraction=0.25)


@pytest.fixture(scope="module")
def dense_ae(tiny_data_root, tmp_path_factory):
    """(trained, path): both scorers, both inference modes, dense the default."""
    torch.set_num_threads(2)
    trained = DETECTOR.fit(open_dataset(tiny_data_root).train, SmallAEConfig(scorer="reconstruction,support", **TINY))
    path, _ = write_trained(trained, tmp_path_factory.mktemp("dense_ae") / "dense.edgead")
    return trained, path


def _frames(root, n=2):
    return [read_image(s.path) for s in open_dataset(root).test[:n]]


def test_dense_error_equals_the_patch_error_inside_patches_exactly():
    """Patches at origins a multiple of 4 px see the frame's own receptive field away from their borders: equal there."""
    torch.manual_seed(0)
    autoencoder = SmallAutoEncoder().eval()
    frame = torch.randint(0, 256, (1, 128, 160, 3), dtype=torch.uint8)
    with torch.no_grad():
        dense_error, dense_latent = DenseGraph(autoencoder)(frame)
        for r, c in [(0, 0), (32, 64), (64, 96)]:
            error, latent = PatchGraph(autoencoder)(frame[:, r : r + 63, c : c + 63].contiguous())
            # codes whose 15 px receptive field lies inside the patch, and the error of the pixels decoded from them only
            torch.testing.assert_close(latent[:, :, 2:15, 2:15], dense_latent[:, :, r // 4 + 2 : r // 4 + 15, c // 4 + 2 : c // 4 + 15], rtol=0, atol=1e-6)
            torch.testing.assert_close(error[:, 12:51, 12:51], dense_error[:, r + 12 : r + 51, c + 12 : c + 51], rtol=0, atol=1e-6)
            assert (error[:, :4] - dense_error[:, r : r + 4, c : c + 63]).abs().max() > 0 or r == 0  # the borders do differ


def test_dense_error_map_matches_the_stride_4_patch_map_on_the_frame_interior(dense_ae, tiny_data_root):
    """The stitched stride-4 patch map averages each pixel over 256 patches, most seeing it away from their borders."""
    trained, _ = dense_ae
    frames = load_frames([s.path for s in open_dataset(tiny_data_root).test[:3]], 96)
    autoencoder = trained.autoencoder.eval()
    with torch.no_grad():
        dense = DenseGraph(autoencoder)(torch.from_numpy(frames))[0].numpy()
        origins = tile_origins(96, 96, 63, 4)
        for frame, dense_map in zip(frames, dense):
            patches = torch.from_numpy(np.stack([frame[r : r + 63, c : c + 63] for r, c in origins]))
            stitched = stitch(PatchGraph(autoencoder)(patches)[0].numpy(), origins, (96, 96), 63)
            inner = (slice(16, 80), slice(16, 80))
            relative = np.abs(stitched[inner] - dense_map[inner]).mean() / dense_map[inner].mean()
            assert relative < 0.01, relative  # 0.0026 measured on each of the three frames
            assert np.corrcoef(stitched[inner].ravel(), dense_map[inner].ravel())[0, 1] > 0.999


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_dense_onnx_graph_runs_frames_of_any_size_as_the_eager_graph(exporter):
    from edgead.kit.small_ae import ErrorSettings

    torch.manual_seed(1)
    # the default error map's operations: a low pass, a texture window, log and abs (scales as fitting gives them)
    error = ErrorSettings(lowpass_sigma_px=2.0, lowpass_scale=0.01, texture_sigma_px=8.0, texture_weight=2.0, texture_log_ref=-3.0, texture_scale=1.5)
    graph = DenseGraph(SmallAutoEncoder(), error).eval()
    spec = graph_specs({"graphs": graph_specs_of(SmallAEConfig(image_size_px=96))})["dense"]
    data = export_onnx(graph, spec=spec, exporter=exporter)
    inputs, outputs = graph_io(data)
    assert inputs["frames"] == ["batch", "height", "width", 3] and outputs["latent"] == ["batch", 16, "latent_height", "latent_width"]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(1, 96, 96, 3), (2, 131, 200, 3)]:  # the deployed size, and a tile of another size
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        error, latent = session.run(None, {"frames": frames})
        with torch.no_grad():
            want_error, want_latent = graph(torch.from_numpy(frames))
        assert error.shape == shape[:3] and latent.shape == (shape[0], 16, dense_latent_px(shape[1]), dense_latent_px(shape[2]))
        np.testing.assert_allclose(error, want_error.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(latent, want_latent.numpy(), rtol=1e-4, atol=1e-5)
    fixed, _ = graph_io(fixed_axes(data, spec))  # what TensorRT is built from: the deployed size
    assert fixed["frames"] == ["batch", 96, 96, 3]


def test_dense_torchscript_graph_runs_frames_of_any_size_as_the_eager_graph():
    import io

    from edgead.export.torchscript import export_torchscript
    from edgead.kit.small_ae import ErrorSettings

    torch.manual_seed(1)
    error = ErrorSettings(lowpass_sigma_px=2.0, lowpass_scale=0.01, texture_sigma_px=8.0, texture_weight=2.0, texture_log_ref=-3.0, texture_scale=1.5)
    graph = DenseGraph(SmallAutoEncoder(), error).eval()
    spec = graph_specs({"graphs": graph_specs_of(SmallAEConfig(image_size_px=96))})["dense"]
    traced = torch.jit.load(io.BytesIO(export_torchscript(graph, spec=spec)))
    for shape in [(1, 96, 96, 3), (2, 131, 200, 3)]:  # traced on 96 px frames; the pad and the crop follow the input
        frames = torch.randint(0, 256, shape, dtype=torch.uint8)
        with torch.no_grad():
            for got, want in zip(traced(frames), graph(frames)):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_coverage_mean_is_stitching_constant_patch_maps():
    rng = np.random.default_rng(2)
    rows, cols = patch_starts(96, 8), patch_starts(130, 12)
    assert rows[-1] == 36 and cols.tolist()[-2:] == [60, 68] and all(o % 4 == 0 for o in [*rows, *cols])
    scores = rng.normal(size=(2, len(rows), len(cols))).astype(np.float32)
    got = coverage_mean(scores, rows, cols, (96, 130))
    origins = [(int(r), int(c)) for r in rows for c in cols]
    for s, g in zip(scores, got):
        # the last patches reach past the edge (into the dense graph's reflected border): cut them for stitch
        padded = stitch(np.repeat(np.repeat(s.reshape(-1, 1, 1), 63, 1), 63, 2), origins, (99, 131), 63)
        assert g.shape == (96, 130)
        np.testing.assert_allclose(g, padded[:96, :130], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g[:8, :12], s[0, 0], rtol=1e-6)  # only the first patch covers the corner


def test_dense_support_head_scores_every_window_as_the_svm_scores_copied_codes(dense_ae, tiny_data_root):
    """The dense SVM takes cells 1-15 of each patch's 17x17 window; the frame's map is the patches' mean, not smoothed again."""
    trained, path = dense_ae
    frames = np.stack(_frames(tiny_data_root))
    first, cells = DENSE_SVM_WINDOW
    assert (first, cells) == (1, 15)
    artifact = read_artifact(path)
    assert artifact.manifest["dense_svm"]["window"] == {"first_cell": 1, "cells": 15} and artifact.manifest["dense_svm"]["dim"] == 16 * 15 * 15
    assert "window" not in artifact.manifest["svm"]  # the patch SVM takes the patch graph's whole code
    with Predictor(artifact, "onnxruntime", scorer="support") as predictor:
        outputs = predictor.infer(predictor.prepare(list(frames)))
        head = predictor.scoring_head
        assert head.dense and outputs["latent"].shape == (2, 16, 26, 26) and predictor.blur_sigma_px == 0.0
        rows = patch_starts(96, 8) // 4
        grid = head.grid_scores(outputs["latent"], rows, rows)
        maps = predictor.head(outputs)
        predictions = predictor.predict(list(frames))
    codes = np.stack([outputs["latent"][i, :, r + 1 : r + 16, c + 1 : c + 16].reshape(-1) for i in range(2) for r in rows for c in rows])
    want = -head.svm.decision(codes).reshape(2, len(rows), len(rows))
    np.testing.assert_allclose(grid, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(maps, coverage_mean(want, rows * 4, rows * 4, (96, 96)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.stack([p.anomaly_map for p in predictions]), maps, rtol=1e-5, atol=1e-7)  # no blur on top
    for inference, scorer in [("dense", "reconstruction"), ("patches", "support"), ("patches", "reconstruction")]:  # the others keep the blur
        with Predictor(artifact, "onnxruntime", scorer=scorer, inference=inference) as predictor:
            assert predictor.blur_sigma_px == trained.config.blur_sigma_px == 4.0, (inference, scorer)


def test_dense_support_head_reads_the_window_its_manifest_names(dense_ae):
    """Models before the inner windows (no dense_svm.window) score whole 17x17 windows; a window off the code is refused."""
    import copy
    import dataclasses

    from edgead.errors import ArtifactError
    from edgead.runtime.heads import open_head

    _, path = dense_ae
    artifact = read_artifact(path)
    latent = np.random.default_rng(0).normal(size=(1, 16, 26, 26)).astype(np.float32)
    rows = np.array([0, 2, 9])
    head = open_head(with_scorer(artifact, "support"))
    assert (head.window_first, head.window_cells) == (1, 15)
    want = -head.svm.decision(np.stack([latent[0, :, r + 1 : r + 16, c + 1 : c + 16].reshape(-1) for r in rows for c in rows]))
    np.testing.assert_allclose(head.grid_scores(latent, rows, rows)[0].ravel(), want, rtol=1e-6, atol=1e-9)
    manifest = copy.deepcopy(artifact.manifest)
    del manifest["dense_svm"]["window"]
    old = open_head(with_scorer(dataclasses.replace(artifact, manifest=manifest), "support"))
    assert (old.window_first, old.window_cells) == (0, 17)
    with pytest.raises(Exception, match="takes latent grids"):  # its 15x15 support vectors are not whole windows
        old.score({"latent": latent})
    manifest["dense_svm"]["window"] = {"first_cell": 3, "cells": 15}
    with pytest.raises(ArtifactError, match="does not lie inside"):
        open_head(with_scorer(dataclasses.replace(artifact, manifest=manifest), "support"))


def test_both_modes_are_stored_and_calibrated_dense_is_the_default(dense_ae):
    trained, path = dense_ae
    artifact = read_artifact(path)
    manifest = artifact.manifest
    assert manifest["inference"]["default"] == "dense" and set(manifest["inference"]["modes"]) == {"dense", "patches"}
    assert manifest["head"]["graph"] == "dense" and manifest["input"]["size_px"] == [96, 96] and not manifest["tiling"]["enabled"]
    assert manifest["graphs"]["dense"]["dynamic_axes"]["frames"] == {"1": "height", "2": "width"}
    assert {(e["graph"], e["format"]) for e in manifest["engines"]} == {(g, f) for g in ("dense", "patch") for f in ("onnx", "torchscript")}
    patches = with_inference(artifact, "patches").manifest
    assert patches["head"]["graph"] == "patch" and patches["input"]["size_px"] == [63, 63] and patches["tiling"]["patches"]
    for mode in ("dense", "patches"):
        for scorer in ("reconstruction", "support"):
            calibration = manifest["inference"]["modes"][mode]["calibrations"][scorer]
            assert calibration == trained.calibrations[mode][scorer] and np.isfinite(calibration["image_threshold"])
    with Predictor(artifact, "onnxruntime", inference="patches", scorer="support") as predictor:
        assert predictor.main_graph == "patch" and predictor.threshold == trained.calibrations["patches"]["support"]["image_threshold"]
    with Predictor(artifact, "onnxruntime", scorer="support") as predictor:
        assert predictor.main_graph == "dense" and predictor.threshold == trained.calibrations["dense"]["support"]["image_threshold"]


@pytest.mark.parametrize("scorer", ["reconstruction", "support"])
def test_dense_onnx_engine_scores_frames_as_the_eager_modules(dense_ae, tiny_data_root, scorer):
    trained, path = dense_ae
    artifact = read_artifact(path)
    images = _frames(tiny_data_root, 3)
    with Predictor(artifact, eager_backends(artifact, trained.graphs), scorer=scorer) as eager:
        want = eager.predict(images)
    with Predictor(artifact, "onnxruntime", scorer=scorer) as engine:
        got = engine.predict(images)
    for w, g in zip(want, got):
        assert g.anomaly_map.shape == (96, 96)
        np.testing.assert_allclose(g.anomaly_map, w.anomaly_map, rtol=1e-4, atol=1e-6 * np.abs(w.anomaly_map).max())


def test_large_frames_go_through_the_dense_graph_as_tiles(dense_ae, tiny_data_root):
    _, path = dense_ae
    big = np.concatenate([np.concatenate(_frames(tiny_data_root, 2), axis=1)] * 2, axis=0)  # two by two test images
    height, width = big.shape[:2]
    with Predictor(read_artifact(path), "onnxruntime", tiling=Tiling(96, 64)) as predictor:
        batch = predictor.prepare([big])
        # tiles at the frame's own resolution, not the frame resized to the model's 96 px
        assert len(batch.images) == len(tile_origins(height, width, 96, 64)) > 1 and batch.images.shape[1:] == (96, 96, 3)
        (prediction,) = predictor.predict([big])
    assert prediction.anomaly_map.shape == (height, width) and np.isfinite(prediction.anomaly_map).all()


def test_cli_inference_option(dense_ae, tiny_data_root):
    _, path = dense_ae
    runner = CliRunner()
    results = {}
    for mode in ("dense", "patches"):
        result = runner.invoke(main, ["eval", str(tiny_data_root), "--model", str(path), "--inference", mode, "--json", "-q"])
        assert result.exit_code == 0, result.output
        results[mode] = json.loads(result.output)
    assert results["dense"]["image_auroc"] != results["patches"]["image_auroc"] or results["dense"]["pixel_auroc"] != results["patches"]["pixel_auroc"]
    result = runner.invoke(main, ["bench", "--model", str(path), "--inference", "patches", "--iterations", "2", "--warmup", "1"])
    assert result.exit_code == 0 and "36 per image" in result.output  # 6 x 6 patches every 8 px of 96 px (the last at 33)
    result = runner.invoke(main, ["bench", "--model", str(path), "--iterations", "2", "--warmup", "1"])
    assert result.exit_code == 0 and "patches " not in result.output  # one frame per engine call, no patches


def test_inference_modes_a_model_lacks_are_one_line_errors(tiny_trained, tiny_data_root, tmp_path):
    _, patchcore = tiny_trained
    with pytest.raises(ConfigError, match="--inference does not apply|one way to score"):
        with_inference(read_artifact(patchcore), "dense")
    result = CliRunner().invoke(main, ["eval", str(tiny_data_root), "--model", str(patchcore), "--inference", "dense", "-q"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    with pytest.raises(ConfigError, match="multiple of 4.*--inference patches"):
        SmallAEConfig(scorer="support", patch_stride_px=6)
    config = SmallAEConfig(scorer="support", patch_stride_px=6, inference="patches")
    assert config.inference_modes == ("patches",)
    assert SmallAEConfig(patch_stride_px=6).inference_modes == ("dense", "patches")  # reconstruction alone needs no grid


def test_default_error_map_is_low_passed_with_a_texture_term_fitted_on_good_frames(dense_ae, tiny_data_root):
    """The scales and reference come from the training frames: there each term's 99th percentile is 1."""
    from edgead.kit.small_ae import TEXTURE_EPS, ErrorSettings
    from edgead.runtime.postprocess import smooth

    trained, path = dense_ae
    config, error = trained.config, trained.error
    assert (error.lowpass_sigma_px, error.texture_sigma_px, error.texture_weight) == (config.error_sigma_px, config.texture_sigma_px, config.texture_weight) == (2.0, 8.0, 2.0)
    artifact = read_artifact(path)
    assert ErrorSettings.from_dict(artifact.manifest["error_map"]) == error
    frames = load_frames(trained.train_images, 96)
    dense = trained.graphs["dense"]
    with torch.no_grad():
        low, energy = dense.error.parts(*dense.reconstruct(torch.from_numpy(frames))[:2])
    lowpass = np.stack([smooth(m, config.blur_sigma_px) for m in low.numpy()]) / error.lowpass_scale
    texture = np.abs(np.log(energy.numpy() + TEXTURE_EPS) - error.texture_log_ref) / error.texture_scale
    assert np.quantile(lowpass, 0.99) == pytest.approx(1.0, rel=1e-3) and np.quantile(texture, 0.99) == pytest.approx(1.0, rel=1e-3)
    # the graphs rebuilt from the artifact (what `edgead export` and parity use) compute the same error
    rebuilt = DETECTOR.load_graphs(artifact)
    with torch.no_grad():
        for name, graph in trained.graphs.items():
            x = torch.from_numpy(frames[:2] if name == "dense" else np.ascontiguousarray(frames[:2, :63, :63]))
            torch.testing.assert_close(rebuilt[name](x)[0], graph(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("sigma", [0.0, 2.0])
def test_dense_low_pass_error_equals_the_patch_error_inside_patches(sigma):
    from edgead.kit.small_ae import ErrorSettings

    torch.manual_seed(0)
    autoencoder = SmallAutoEncoder().eval()
    settings = ErrorSettings(lowpass_sigma_px=sigma)
    frame = torch.randint(0, 256, (1, 128, 160, 3), dtype=torch.uint8)
    inner = 12 + (6 if sigma else 0)  # the low pass reaches 3 sigma further towards the patch border
    with torch.no_grad():
        dense_error, _ = DenseGraph(autoencoder, settings)(frame)
        for r, c in [(32, 64), (64, 96)]:
            error, _ = PatchGraph(autoencoder, settings)(frame[:, r : r + 63, c : c + 63].contiguous())
            torch.testing.assert_close(error[:, inner : 63 - inner, inner : 63 - inner], dense_error[:, r + inner : r + 63 - inner, c + inner : c + 63 - inner], rtol=0, atol=1e-6)


def test_models_before_the_error_settings_keep_the_per_pixel_error():
    old = {k: v for k, v in SmallAEConfig().to_dict().items() if k not in ("error_sigma_px", "texture_sigma_px", "texture_weight")}
    config = SmallAEConfig.from_dict(old)
    assert config.error_sigma_px == 0.0 and config.texture_weight == 0.0
    from edgead.kit.small_ae import ErrorSettings

    assert ErrorSettings.from_dict(None) == ErrorSettings()  # a manifest without error_map: the paper's squared error
    for bad in (dict(error_sigma_px=-1), dict(texture_weight=-0.5), dict(texture_sigma_px=40), dict(score_quantile=1.5)):
        with pytest.raises(ConfigError):
            SmallAEConfig(**bad)
    assert SmallAEConfig(score_quantile=1.0).score_quantile == 1.0  # the map's maximum


def test_cli_options_give_back_the_papers_error_and_the_maps_maximum(tiny_data_root, tmp_path):
    from edgead.kit.small_ae import ErrorSettings

    out = tmp_path / "paper.edgead"
    args = ["train", str(tiny_data_root), "--method", "small-ae", "--out", str(out), "--image-size", "96", "--epochs", "1",
            "--patches-per-epoch", "64", "--holdout", "0.25", "--error-sigma", "0", "--texture-weight", "0", "--score-quantile", "1", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    manifest = read_artifact(out).manifest
    assert ErrorSettings.from_dict(manifest["error_map"]) == ErrorSettings()
    assert (manifest["config"]["error_sigma_px"], manifest["config"]["texture_weight"], manifest["postprocess"]["score_quantile"]) == (0.0, 0.0, 1.0)
    assert SmallAEConfig().patches_per_epoch == 8192 and SmallAEConfig().score_quantile == 0.99
