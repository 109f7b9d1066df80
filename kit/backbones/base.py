"""What every feature backbone shares: the module contract and checked weight loading."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgead.errors import ArtifactError, ConfigError, DependencyError

# A listing of bad keys names at most this many; the rest are counted.
_KEYS_SHOWN = 5


class FeatureBackbone(nn.Module):
    """A frozen CNN trunk that maps a normalised image to two or more mid-level feature maps.

    forward(x): x (N, 3, H, W) float, RGB, already normalised with `mean`/`std` on 0-1 input;
    returns (N, C1, H/8, W/8), (N, C2, H/16, W/16) by default, one map per `feature_strides`
    entry, the stride-8 one first. H and W must be multiples of `input_multiple_px` (see `check_input_px`).
    """

    name: str = ""
    feature_channels: tuple[int, ...] = (0, 0)
    feature_strides: tuple[int, ...] = (8, 16)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    input_multiple_px: int = 16

    def check_input_px(self, height_px: int, width_px: int) -> None:
        """Raise ConfigError unless an input of this size gives exact feature maps at every stride."""
        m = self.input_multiple_px
        if height_px <= 0 or width_px <= 0 or height_px % m or width_px % m:
            raise ConfigError(
                f"{self.name} needs an input size that is a positive multiple of {m} px; "
                f"got {height_px}x{width_px} — choose e.g. {_round_up(height_px, m)}x{_round_up(width_px, m)}"
            )


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from `.safetensors` or a plain `.pth`/`.pt` tensor dict (never unpickling code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise DependencyError(
                f"reading {path} needs safetensors: pip install safetensors (or edgead[train])"
            ) from exc
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for a corrupt header
            raise ArtifactError(f"cannot read weights {path}: {exc}") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no pickled code runs
    except Exception as exc:  # an unpickling refusal, a truncated zip, a non-torch file
        raise ArtifactError(
            f"cannot read weights {path} as a plain tensor state_dict (weights_only=True): {exc}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a common checkpoint wrapper
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return state


def load_checked(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Load `state` into `module`, dropping keys under `ignore_prefixes`; raise ArtifactError naming bad keys.

    BatchNorm's `num_batches_tracked` may be absent (converted checkpoints lack it); nothing else may.
    """
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label}: {_listing(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
        if keys
    ]
    if problems:
        raise ArtifactError(
            f"weights {source} do not fit {type(module).__name__}: " + "; ".join(problems)
            + " — pass a state_dict of the right architecture"
        )
    module.load_state_dict(state, strict=False)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    more = len(keys) - _KEYS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")
