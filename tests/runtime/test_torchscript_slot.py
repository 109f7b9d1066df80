"""The TorchScript CUDA slot's bookkeeping (pinned buffers, partial batches, reuse), run on the CPU with
torch.cuda's stream and event replaced by stand-ins. The real CUDA run is in the gpu-marked tests below."""

import contextlib

import numpy as np
import pytest
import torch

from edgead.artifact import read_artifact
from edgead.runtime.predictor import Predictor
from edgead.runtime.scheduler import PatchScheduler


class FakeEvent:
    def __init__(self):
        self.recorded = 0

    def record(self, stream):
        self.recorded += 1

    def query(self):
        return self.recorded > 0

    def synchronize(self):
        pass


@pytest.fixture
def cpu_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: object())
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)


def test_slots_give_the_backend_results_for_full_and_partial_batches(tiny_trained, cpu_cuda):
    _, path = tiny_trained
    art = read_artifact(path)
    images = np.concatenate([art.load_npy("parity_images.npy")] * 3)[:7]
    with Predictor(art, backend="torchscript", tiling=False, trust_code=True) as predictor:
        expected = predictor.backend.infer(images)
        slots = [predictor.backend.create_slot(3) for _ in range(2)]
        with PatchScheduler(slots) as scheduler:
            batches = [(i, images[i : i + 3]) for i in range(0, 7, 3)]  # 3, 3, 1: the last one partial
            got = np.concatenate([out for _, out in scheduler.map(batches)])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_slot_refuses_a_batch_larger_than_its_buffers(tiny_trained, cpu_cuda):
    _, path = tiny_trained
    art = read_artifact(path)
    with Predictor(art, backend="torchscript", tiling=False, trust_code=True) as predictor:
        slot = predictor.backend.create_slot(2)
        with pytest.raises(Exception, match="exceeds"):
            slot.submit(np.concatenate([art.load_npy("parity_images.npy")] * 2)[:3])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("streams", [1, 2, 4])
def test_cuda_streams_match_the_synchronous_path(tiny_trained, streams):
    _, path = tiny_trained
    art = read_artifact(path)
    images = np.concatenate([art.load_npy("parity_images.npy")] * 5)
    with Predictor(art, backend="torchscript", device="cuda", precision="fp32", tiling=False, streams=streams, max_batch=3, trust_code=True) as p:
        expected = p.backend.infer(images)
        got = p.infer(images)["features"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
