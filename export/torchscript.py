"""TorchScript export: a traced graph that `torch.jit.load` runs without any edgead code."""

from __future__ import annotations

import io
import warnings

import torch


def export_torchscript(model: torch.nn.Module, size_px: tuple[int, int], half: bool = False) -> bytes:
    """Trace `model` on a uint8 (1, H, W, 3) batch; `half` gives an FP16 graph for CUDA (uint8 input kept)."""
    model = model.eval()
    if half:
        import copy

        model = copy.deepcopy(model).half()
    example = torch.zeros((2, *size_px, 3), dtype=torch.uint8)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (example,), check_trace=False)
        traced = torch.jit.freeze(traced)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()
