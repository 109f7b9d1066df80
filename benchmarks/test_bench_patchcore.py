"""Training time and predict throughput at 256 px on the CPU: runtime (ONNX Runtime) vs eager training code.

Run: .venv/bin/python -m pytest benchmarks --benchmark-only --benchmark-json=bench.json
"""

import numpy as np
import pytest

from edgead.artifact import read_artifact
from edgead.config import PatchCoreConfig
from edgead.export.bundle import write_trained
from edgead.kit.patchcore import fit_patchcore
from edgead.runtime.coreset import greedy_coreset
from edgead.runtime.datasets import open_dataset
from edgead.runtime.images import read_image
from edgead.runtime.predictor import Predictor

BATCH = 8


@pytest.fixture(scope="module")
def model_path(demo_root, tmp_path_factory, size_px):
    fitted = fit_patchcore(open_dataset(demo_root).train, PatchCoreConfig(image_size_px=size_px))
    path, _ = write_trained(fitted, tmp_path_factory.mktemp("m") / "bench.edgead")
    return path


@pytest.fixture(scope="module")
def images(demo_root):
    return [read_image(s.path) for s in open_dataset(demo_root).test[:BATCH]]


def test_train_time(benchmark, demo_root, machine, size_px):
    """Whole fit (features, coreset 10%, calibration) on the demo category's 40 good images."""
    train = open_dataset(demo_root).train
    benchmark.extra_info.update(machine, images=len(train), size_px=size_px, coreset_fraction=0.1)
    benchmark.pedantic(lambda: fit_patchcore(train, PatchCoreConfig(image_size_px=size_px)), rounds=1, iterations=1)


def test_coreset_100_images(benchmark, machine):
    """Greedy coreset of a 100-image bank at 256 px (100 x 32 x 32 features of 152 channels) to 10%."""
    features = np.random.default_rng(0).standard_normal((100 * 32 * 32, 152)).astype(np.float32)
    benchmark.extra_info.update(machine, features=features.shape[0], dim=152, target=10240, projection_dim=64)
    benchmark.pedantic(lambda: greedy_coreset(features, 10240, 64), rounds=1, iterations=1)


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript"])
def test_predict_runtime(benchmark, model_path, images, backend, machine, size_px):
    """Deployed path: resize, engine, kNN bank, maps; a batch of 8 images at 256 px."""
    benchmark.extra_info.update(machine, backend=backend, precision="fp32", batch=BATCH, size_px=size_px)
    with Predictor(read_artifact(model_path), backend=backend, trust_code=backend == "torchscript") as predictor:
        benchmark(predictor.predict, images)


def test_predict_eager_training_code(benchmark, model_path, images, machine, size_px):
    """Reference: the eager torch model from the training code, with the same bank and post-processing."""
    from edgead.export.parity import EagerBackend
    from edgead.kit.patchcore import load_feature_model

    artifact = read_artifact(model_path)
    benchmark.extra_info.update(machine, backend="eager-torch", precision="fp32", batch=BATCH, size_px=size_px)
    with Predictor(artifact, EagerBackend(artifact, load_feature_model(artifact))) as predictor:
        benchmark(predictor.predict, images)
