"""Shared fixtures for the benchmarks: a demo category at 256 px and a model trained on it."""

import os
import platform

import pytest
import torch

from edgead.kit.demo_data import make_demo_dataset

SIZE_PX = 256
THREADS = int(os.environ.get("EDGEAD_BENCH_THREADS", "2"))


@pytest.fixture(scope="session")
def machine() -> dict:
    """What every benchmark records in extra_info: where it ran."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch_threads": THREADS, "device": "cpu"}


@pytest.fixture(scope="session")
def size_px() -> int:
    return SIZE_PX


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    torch.set_num_threads(THREADS)
    (root,) = make_demo_dataset(tmp_path_factory.mktemp("bench"), categories=("brick",), size_px=SIZE_PX)
    return root
