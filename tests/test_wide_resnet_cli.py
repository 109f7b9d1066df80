"""The second backbone end to end through the CLI: WideResNet-50-2 from a user's torchvision-format weights file."""

import json

import torch
from click.testing import CliRunner

from edgead.artifact import read_artifact
from edgead.cli import main
from edgead.kit.backbones import build_backbone
from edgead.kit.demo_data import make_demo_dataset


def test_train_and_eval_with_wide_resnet_weights_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (root,) = make_demo_dataset(tmp_path, categories=("brick",), size_px=64, n_train=6, n_test_good=2, n_test_defect=3)
    weights = tmp_path / "wide_resnet50_2.pth"
    torch.save(build_backbone("wide_resnet50_2", pretrained=False).state_dict(), weights)  # random, torchvision names
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(root), "--backbone", "wide_resnet50_2", "--weights", str(weights), "--image-size", "64", "-q"])
    assert result.exit_code == 0, result.output
    manifest = read_artifact(tmp_path / "model.edgead").manifest
    assert manifest["features"]["channels"] == 1024  # 512 + 1024 pooled to 1024
    assert manifest["features"]["backbone_channels"] == [512, 1024]
    result = runner.invoke(main, ["eval", str(root), "--json"])  # the workspace default model
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.stdout)["image_auroc"] <= 1


def test_wide_resnet_without_weights_says_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (root,) = make_demo_dataset(tmp_path, categories=("brick",), size_px=64, n_train=3, n_test_good=1, n_test_defect=1)
    result = CliRunner().invoke(main, ["train", str(root), "--backbone", "wide_resnet50_2", "--image-size", "64"])
    assert result.exit_code == 2 and "--weights PATH" in result.stderr
