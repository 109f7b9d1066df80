"""jetson/: the cuda-python pin that setup.sh and the Dockerfile install, read from the device's CUDA."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pin(tmp_path, version_json=None, nvcc_release=None):
    cuda_home, bin_dir = tmp_path / "cuda", tmp_path / "bin"
    cuda_home.mkdir()
    bin_dir.mkdir()
    if version_json is not None:
        (cuda_home / "version.json").write_text(version_json)
    if nvcc_release is not None:
        nvcc = bin_dir / "nvcc"
        nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {nvcc_release}, V{nvcc_release}.140'\n")
        nvcc.chmod(0o755)
    env = dict(os.environ, CUDA_HOME=str(cuda_home), PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    return subprocess.run(["bash", str(REPO / "jetson" / "cuda_python_pin.sh")], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("version, want", [("12.6.68", "cuda-python>=12.6,<12.7"), ("12.2.140", "cuda-python>=12.2,<12.3")])
def test_pin_follows_jetpacks_cuda(tmp_path, version, want):
    done = pin(tmp_path, version_json=f'{{"cuda": {{"name": "CUDA SDK", "version": "{version}"}}}}')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == want


def test_pin_falls_back_to_nvcc(tmp_path):
    done = pin(tmp_path, nvcc_release="12.2")
    assert (done.returncode, done.stdout.strip()) == (0, "cuda-python>=12.2,<12.3"), done.stderr


def test_no_cuda_is_a_one_line_error(tmp_path):
    done = pin(tmp_path, version_json="{not json")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "EDGEAD_CUDA_PYTHON" in done.stderr
