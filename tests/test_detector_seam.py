"""The detector seam: a detector defined here, registered in the two registries, runs through training's writer,
export with parity, the Predictor, and the CLI's eval/predict/bench/run — with no code of its own anywhere else.

The fake has two graphs, one with two outputs (a float map and integer codes) and one that takes integer codes,
so the seam's multi-graph, multi-output and non-image paths are all exercised.
"""

import json
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgead import __version__
from edgead.artifact import Artifact, read_artifact
from edgead.cli import main
from edgead.graphs import FORMAT_VERSION, graph_spec
from edgead.kit import detectors
from edgead.runtime import heads
from edgead.runtime.heads.base import Head
from edgead.runtime.predictor import Predictor

SIZE = 64
GRID = 8


class Patches(torch.nn.Module):
    """uint8 images -> per 8x8 cell: squared distance of its mean colour to the normal colour (float), and a code (int64)."""

    def __init__(self, normal: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("normal", normal.view(1, 3, 1, 1))

    def forward(self, images):
        x = torch.nn.functional.avg_pool2d(images.float().permute(0, 3, 1, 2), SIZE // GRID)
        energy = ((x - self.normal) ** 2).sum(dim=1)
        codes = (x[:, 0] > self.normal[:, 0]).to(torch.int64)
        return energy, codes


class Refine(torch.nn.Module):
    """int64 codes (N, h, w) -> float weights (N, h, w): a graph that the head calls itself."""

    def forward(self, codes):
        return 1.0 + 0.5 * codes.float()


class FakeHead(Head):
    name = "fake"

    def score(self, outputs):
        weights = self.backends["refine"].infer(outputs["codes"])
        return (np.sqrt(outputs["energy"]) * weights).astype(np.float32)


@dataclass(frozen=True)
class FakeConfig:
    image_size_px: int = SIZE
    seed: int = 0


@dataclass
class FakeTrained:
    config: FakeConfig
    graphs: dict
    parity_images: np.ndarray
    calibration: dict = field(default_factory=dict)

    def artifact_parts(self):
        from safetensors.torch import save

        manifest = {
            "format_version": FORMAT_VERSION,
            "created_by": f"edgead {__version__}",
            "method": "fake",
            "config": {"image_size_px": SIZE, "seed": 0},
            "input": {"size_px": [SIZE, SIZE], "color_order": "RGB", "dtype": "uint8", "layout": "NHWC", "normalisation": {}},
            "graphs": {
                "patch": graph_spec(
                    "patch",
                    {"images": (("batch", SIZE, SIZE, 3), "uint8")},
                    {"energy": (("batch", GRID, GRID), "float32"), "codes": (("batch", GRID, GRID), "int64")},
                ).to_dict(),
                "refine": graph_spec("refine", {"codes": (("batch", GRID, GRID), "int64")}, {"weights": (("batch", GRID, GRID), "float32")}).to_dict(),
            },
            "head": {"name": "fake", "graph": "patch"},
            "postprocess": {"blur_sigma_px": 1.0, "score_quantile": None, **self.calibration},
            "weights": {"member": "weights.safetensors", "format": "safetensors"},
            "training": {"timings_s": {"fit": 0.0}},
            "engines": [],
        }
        return manifest, {"weights.safetensors": save({"normal": self.graphs["patch"].normal.contiguous()})}

    def summary(self, manifest):
        return [f"threshold: {manifest['postprocess']['image_threshold']:.4f}"]


class FakeDetector:
    name = "fake"
    config_class = FakeConfig
    resumable = False

    def fit(self, train_paths, config, *, weights=None, progress=None, device="cpu", checkpoint=None, resume=None):
        from edgead.kit.eager import calibrate_good_images
        from edgead.runtime.images import read_image
        from edgead.runtime.preprocess import stack_batch

        images = stack_batch([read_image(p) for p in train_paths], (SIZE, SIZE))
        normal = torch.from_numpy(images.reshape(-1, 3).mean(axis=0).astype(np.float32))
        trained = FakeTrained(config, {"patch": Patches(normal).eval(), "refine": Refine().eval()}, images[:4])
        manifest, members = trained.artifact_parts()
        # the generic calibration: this head cannot refit per fold and nothing is held out, so in-sample (and warned)
        trained.calibration = calibrate_good_images(manifest, members, trained.graphs, train_paths, [], config)
        return trained

    def load_graphs(self, artifact):
        from safetensors.torch import load

        return {"patch": Patches(load(artifact.member("weights.safetensors"))["normal"]).eval(), "refine": Refine().eval()}


DETECTOR = FakeDetector()


@pytest.fixture(scope="module")
def fake_registered():
    """This module as a detector module and a head module, registered the way a new detector registers."""
    module = types.ModuleType("edgead_fake_detector")
    module.DETECTOR, module.FakeHead = DETECTOR, FakeHead
    patch = pytest.MonkeyPatch()
    patch.setitem(sys.modules, "edgead_fake_detector", module)
    patch.setitem(detectors.DETECTORS, "fake", "edgead_fake_detector")
    patch.setitem(heads.HEADS, "fake", ("edgead_fake_detector", "FakeHead"))
    yield
    patch.undo()


@pytest.fixture(scope="module")
def fake_model(fake_registered, tiny_data_root, tmp_path_factory):
    from edgead.export.bundle import write_trained
    from edgead.runtime.datasets import open_dataset

    detector = detectors.get_detector("fake")
    trained = detector.fit(open_dataset(tiny_data_root).train, detectors.build_config(detector, {"seed": None}))
    path, manifest = write_trained(trained, tmp_path_factory.mktemp("fake") / "fake.edgead")
    return path, manifest


def test_the_writer_exports_every_graph_with_its_parity(fake_model):
    _, manifest = fake_model
    engines = {(e["graph"], e["backend"], e["precision"]) for e in manifest["engines"]}
    assert engines == {(g, b, "fp32") for g in ("patch", "refine") for b in ("onnxruntime", "torchscript")}
    for entry in manifest["engines"]:
        parity = entry["parity"]
        assert parity["graphs"]["patch"]["codes_mismatch_fraction"] == 0.0
        assert parity["graphs"]["patch"]["max_rel_output_diff"] < 1e-5
        assert parity["graphs"]["refine"]["max_rel_output_diff"] < 1e-6
        assert parity["max_rel_score_diff"] < 1e-5


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript"])
def test_predict_through_the_seam_matches_the_eager_modules(fake_model, tiny_data_root, backend):
    from edgead.kit.eager import eager_backends
    from edgead.runtime.datasets import open_dataset
    from edgead.runtime.images import read_image

    path, _ = fake_model
    artifact = read_artifact(path)
    images = [read_image(s.path) for s in open_dataset(tiny_data_root).test]
    with Predictor(artifact, backend=backend, trust_code=backend == "torchscript") as engines:  # our own model
        got = engines.predict(images)
        assert set(engines.backends) == {"patch", "refine"} and engines.scoring_head.name == "fake"
    with Predictor(artifact, eager_backends(artifact, DETECTOR.load_graphs(artifact))) as eager:
        want = eager.predict(images)
    np.testing.assert_allclose([p.score for p in got], [p.score for p in want], rtol=1e-5)
    assert got[0].anomaly_map.shape == (SIZE, SIZE)


def test_export_rebuilds_every_graph_through_the_registry(fake_model, tmp_path):
    from edgead.export.stage import export_model

    path, _ = fake_model
    result = export_model(path, "fp16", "torchscript", out=tmp_path / "fp16.edgead")
    assert sorted(e["graph"] for e in result.engines) == ["patch", "refine"]
    artifact = read_artifact(result.path)
    assert artifact.engine("torchscript", "fp16", graph="refine") is not None


def test_cli_eval_predict_bench_and_run_need_no_detector_code(fake_model, tiny_data_root, tmp_path):
    path, _ = fake_model
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(tiny_data_root), "--model", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert 0.0 <= json.loads(result.stdout)["image_auroc"] <= 1.0
    result = runner.invoke(main, ["predict", str(tiny_data_root / "test"), "--model", str(path), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "p" / "predictions.jsonl").read_text().splitlines()) == len(list((tiny_data_root / "test").rglob("*.png")))
    result = runner.invoke(main, ["bench", "--model", str(path), "--iterations", "2", "--warmup", "1"])
    assert result.exit_code == 0 and "head" in result.output, result.output
    result = runner.invoke(main, ["run", "--images", str(tiny_data_root / "test" / "good"), "--model", str(path), "--headless", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == len(list((tiny_data_root / "test" / "good").glob("*.png")))


def test_a_detector_without_fold_refits_gets_a_false_alarm_rate_threshold_that_says_how_it_was_made(fake_model):
    _, manifest = fake_model
    section = manifest["postprocess"]["calibration"]
    assert section["false_alarm_rate"] == 0.01 and section["method"].startswith("training images, in-sample")
    assert manifest["postprocess"]["image_threshold"] == section["threshold"]


def test_enroll_says_it_needs_a_memory_bank(fake_model, tiny_data_root, tmp_path):
    path, _ = fake_model
    result = CliRunner().invoke(main, ["enroll", str(tiny_data_root / "train" / "good"), "--model", str(path), "--out", str(tmp_path / "e.edgead")])
    assert result.exit_code == 2 and "memory bank" in result.stderr and "fake head" in result.stderr


def test_an_option_the_detector_lacks_is_an_error(fake_registered):
    from edgead.errors import ConfigError

    with pytest.raises(ConfigError, match="--coreset does not apply to --method fake"):
        detectors.build_config(detectors.get_detector("fake"), {"coreset_fraction": 0.2}, {"coreset_fraction": "--coreset"})


def test_an_in_memory_artifact_without_the_head_section_is_refused():
    from edgead.errors import ArtifactError

    with pytest.raises(ArtifactError, match="'head'"):
        heads.open_head(Artifact(__import__("pathlib").Path("x"), {"graphs": {}}, {}))


def test_resume_of_a_one_pass_method_is_an_error(tiny_data_root, tmp_path):
    result = CliRunner().invoke(main, ["train", str(tiny_data_root), "--resume", str(tmp_path / "x.ckpt"), "--out", str(tmp_path / "m.edgead")])
    assert result.exit_code == 2 and "--resume does not apply to --method patchcore" in result.stderr


@pytest.mark.parametrize("device", ["gpu", "foo"])
def test_train_on_an_unknown_device_is_an_error(tiny_data_root, tmp_path, device):
    result = CliRunner().invoke(main, ["train", str(tiny_data_root), "--device", device, "--out", str(tmp_path / "m.edgead")])
    assert result.exit_code == 2 and "is not a device" in result.stderr
