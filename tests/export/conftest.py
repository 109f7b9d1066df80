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
    args = ["train", str(tiny_data_root), "--method", "vq-restore", "--out", str(out), "-q", "--image-size", "32",
            "--codebook-size", "16", "--epochs", "2", "--prior-epochs", "2", "--holdout", "0.25", "--batch-size", "4", "--eta", "0.2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out
