"""Shared fixtures: a tiny demo category and a tiny model trained on it (once per session)."""

import pytest
import torch

from edgead.config import PatchCoreConfig
from edgead.export.bundle import write_trained
from edgead.kit.demo_data import make_demo_dataset
from edgead.kit.patchcore import fit_patchcore
from edgead.runtime.datasets import open_dataset

TINY_SIZE_PX = 128


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    (root,) = make_demo_dataset(out, categories=("brick",), size_px=TINY_SIZE_PX, n_train=8, n_test_good=4, n_test_defect=6, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_trained(tiny_data_root, tmp_path_factory):
    """(TrainedPatchCore, path of its .edgead) — do not modify the file; copy it first."""
    torch.set_num_threads(2)
    config = PatchCoreConfig(image_size_px=TINY_SIZE_PX, coreset_fraction=0.25, holdout_fraction=0.25, batch_size=4)
    fitted = fit_patchcore(open_dataset(tiny_data_root).train, config)
    path, _ = write_trained(fitted, tmp_path_factory.mktemp("model") / "tiny.edgead")
    return fitted, path
