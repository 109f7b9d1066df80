"""Fixtures of the export tests: a tiny vq-restore model (three graphs, the restoration head), trained once per session."""

import pytest
import torch
from click.testing import CliRunner

from edgead.cli import main


@pytest.fixture(scope="session")
def tiny_vq_model(tiny_data_root, tmp_path_factory):
    """Path of a vq-restore .edgead at 32 px with ONNX engines of encoder, prior and decoder — copy before modifying."""
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("vq") / "vq.edgead"
    args = ["train", str(tiny_data_root), "--method", "vq-restore", "--latents", "pixels", "--out", str(out), "-q", "--image-size", "32",
            "--codebook-size", "16", "--epochs", "2", "--prior-epochs", "2", "--holdout", "0.25", "--batch-size", "4", "--eta", "0.2",
            # without nuisance copies: at 2 epochs the copies leave this tiny model nothing to restore (every image scored alike)
            "--nuisance", "off"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_small_ae_model(tiny_data_root, tmp_path_factory):
    """Path of a small-ae .edgead (63 px patches of 96 px frames at a 16 px stride, both scorers) — copy before modifying."""
    from edgead.config import SmallAEConfig
    from edgead.export.bundle import write_trained
    from edgead.kit.small_ae_detector import DETECTOR
    from edgead.runtime.datasets import open_dataset

    torch.set_num_threads(2)
    config = SmallAEConfig(scorer="reconstruction,support", image_size_px=96, patch_stride_px=16, epochs=1, patches_per_epoch=64,
                           batch_size=32, svm_patches=60, holdout_fraction=0.25)
    path, _ = write_trained(DETECTOR.fit(open_dataset(tiny_data_root).train, config), tmp_path_factory.mktemp("small_ae") / "small.edgead")
    return path
