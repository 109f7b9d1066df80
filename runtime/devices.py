"""Device names the runtime accepts: `cpu`, `cuda` and `cuda:N`; anything else is refused, never guessed."""

from __future__ import annotations

import re

from edgead.errors import ConfigError

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")

CUDA_HELP = (
    "a CUDA device needs a GPU backend: onnxruntime-gpu (`pip install onnxruntime-gpu`), a CUDA build of torch "
    "(https://pytorch.org/get-started/locally/), or TensorRT with cuda-python (JetPack on a Jetson); "
    "`edgead doctor` shows what this machine has"
)


def parse_device(text: str) -> str:
    """'cpu', 'cuda' or 'cuda:N' (case and spaces forgiven) -> its canonical form; ConfigError otherwise."""
    device = str(text).strip().lower()
    if not _DEVICE.match(device):
        hint = " (a GPU is called cuda here)" if device in ("gpu", "nvidia") or device.startswith("gpu") else ""
        raise ConfigError(f"--device {text!r} is not a device{hint}: use cpu, cuda or cuda:N (cuda:0 is the first GPU)")
    return device


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")
