"""TorchScript export: a traced graph that `torch.jit.load` runs without any edgead code.

TorchScript is deprecated in PyTorch (warnings since 2.10; torch.export is its successor). It stays a format
users can ask for, for torch-only deployments; its deprecation warnings are kept out of the user's output.
"""

from __future__ import annotations

import io
import warnings

import torch

from edgead.graphs import GraphSpec


def export_torchscript(model: torch.nn.Module, size_px: tuple[int, int] | None = None, half: bool = False, spec: GraphSpec | None = None) -> bytes:
    """Trace `model` on a batch of 2 of its graph's inputs (`spec`; default uint8 images of `size_px`).

    `half` gives an FP16 graph for CUDA (integer inputs such as uint8 images are kept).
    """
    from edgead.export.onnx import image_graph

    model = model.eval()
    if half:
        import copy

        model = copy.deepcopy(model).half()
    spec = spec or image_graph(size_px)
    examples = tuple(torch.from_numpy(t.example(2)) for t in spec.inputs)
    if half:  # a float input follows the model into FP16; integer inputs (uint8 images, codes) stay as they are
        examples = tuple(x.half() if x.is_floating_point() else x for x in examples)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace/freeze/save, deprecated since torch 2.10
        traced = torch.jit.trace(model, examples, check_trace=False)
        traced = torch.jit.freeze(traced)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()
