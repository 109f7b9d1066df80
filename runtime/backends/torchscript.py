"""TorchScript backend: imports torch only when chosen; CPU, or CUDA (FP16 engine where exported).

A TorchScript engine is a program that can read and write files: it is opened only with `trusted=True`,
which `open_backend` gives for a model the user trusts (`--trust-torchscript`, or a verified signature).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import BackendError, BackendUnavailable
from edgead.runtime.backends.base import Backend, require
from edgead.runtime.scheduler import stage


class TorchScriptBackend(Backend):
    name = "torchscript"

    def __init__(self, artifact: Artifact, engine: dict[str, Any], device: str, trusted: bool = False) -> None:
        super().__init__(artifact, engine, device)
        if not (trusted or artifact.signed_by is not None):
            raise BackendError(f"{engine.get('member')}: a TorchScript engine runs code from the model file; it is opened only for a trusted model")
        self.torch = require("torch", "train")
        if device.startswith("cuda") and not self.torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device here; use --device cpu")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated since torch 2.10
                self.module = self.torch.jit.load(io.BytesIO(artifact.member(engine["member"])), map_location=device)
        except RuntimeError as exc:
            raise BackendError(f"torch.jit.load could not load {engine['member']}: {' '.join(str(exc).split())[:400]}") from exc
        self.module.eval()

    def infer(self, inputs: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        torch = self.torch
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device)
            return to_numpy(self.module(batch))

    def create_slot(self, max_batch: int) -> TorchScriptCudaSlot:
        """A CUDA stream with pinned input/output buffers for the patch scheduler (CUDA devices only)."""
        return TorchScriptCudaSlot(self, max_batch)

    def close(self) -> None:
        if not self._closed:
            self.module = None
        super().close()


def to_numpy(outputs):
    """A module's output tensor, or tuple of tensors, on the host: FP16 as float32, integers as they are."""
    if isinstance(outputs, (tuple, list)):
        return tuple(to_numpy(t) for t in outputs)
    return (outputs.float() if outputs.is_floating_point() else outputs).cpu().numpy()


class TorchScriptCudaSlot:
    """One CUDA stream: pinned input, copy in, the module, copy out to pinned memory (one buffer per output), an event.

    submit() only enqueues; wait() blocks on the event. A slot is reused only after wait(), so its
    pinned input is never overwritten while a copy from it may still be running.
    """

    def __init__(self, backend: TorchScriptBackend, max_batch: int) -> None:
        torch = backend.torch
        self.torch, self.backend, self.max_batch = torch, backend, max_batch
        self.device = torch.device(backend.device)
        self.stream = torch.cuda.Stream(device=self.device)
        self.event = torch.cuda.Event()
        self.host_in = None
        self.host_out = None
        self.several = False
        self.count = 0

    def submit(self, batch: np.ndarray) -> None:
        torch = self.torch
        n = batch.shape[0]
        if n > self.max_batch:
            raise BackendError(f"batch of {n} exceeds the slot's {self.max_batch}")
        dtype = torch.from_numpy(np.empty(0, batch.dtype)).dtype
        if self.host_in is None or self.host_in.dtype != dtype or self.host_in.shape[1:] != batch.shape[1:]:
            self.host_in = torch.empty((self.max_batch, *batch.shape[1:]), dtype=dtype).pin_memory()
        stage(batch, self.host_in.numpy())  # patches are copied from their frames straight into pinned memory
        with torch.cuda.stream(self.stream), torch.inference_mode():
            device_in = self.host_in[:n].to(self.device, non_blocking=True)
            out = self.backend.module(device_in)
            self.several = isinstance(out, (tuple, list))
            outs = tuple(out) if self.several else (out,)
            if self.host_out is None:
                self.host_out = [torch.empty((self.max_batch, *o.shape[1:]), dtype=o.dtype).pin_memory() for o in outs]
            for host, o in zip(self.host_out, outs):
                host[:n].copy_(o, non_blocking=True)
            self.event.record(self.stream)
        self.count = n

    def ready(self) -> bool:
        return self.event.query()

    def wait(self) -> np.ndarray | tuple[np.ndarray, ...]:
        self.event.synchronize()
        outs = tuple(to_numpy(host[: self.count]).copy() for host in self.host_out)
        return outs if self.several else outs[0]

    def close(self) -> None:
        self.host_in = self.host_out = None
