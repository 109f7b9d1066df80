"""The training loop every learned detector shares: epochs a user watches, a fixed seed, a device, and a checkpoint
after each epoch that `--resume` continues from, giving the same weights as a run that was never stopped.

Each epoch draws its randomness from (seed, epoch) alone — torch's generator is re-seeded and a numpy
Generator is handed to the step — so a run resumed at an epoch boundary repeats nothing and skips nothing.
Checkpoints hold no pickle: tensors in a safetensors file, everything else (method, config, epoch, losses,
the optimisers' hyper-parameters) as JSON in its metadata. They are written atomically.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgead.errors import ConfigError, DependencyError
from edgead.progress import Progress, silent_progress

CHECKPOINT_FORMAT = 1
# settings that only shape what happens after the epochs (calibration, run-time defaults): a resumed run may change them
AFTER_TRAINING_KEYS = frozenset({"false_alarm_rate", "folds", "eta", "eta_defects", "passes", "restoration"})


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' -> a torch.device that exists here; anything else is a one-line error."""
    if name == "cpu":
        return torch.device("cpu")
    head, _, index = name.partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DependencyError(
            f"--device {name}: this torch ({torch.__version__}) sees no CUDA GPU; train on a machine with an NVIDIA GPU "
            "and a CUDA build of torch installed into .venv, or use --device cpu"
        )
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices here (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return torch.device(name)


@dataclass
class TrainState:
    """Where a run stands: the next epoch to train and the mean loss of each finished epoch."""

    epoch: int = 0
    losses: list[float] = field(default_factory=list)


def save_checkpoint(
    path: Path, method: str, config: dict[str, Any], state: TrainState, modules: Mapping[str, torch.nn.Module], optimizers: Mapping[str, torch.optim.Optimizer]
) -> None:
    """Write modules, optimiser states and the run's progress to `path` (temporary file, then rename)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module/{name}/{key}"] = value.detach().cpu().contiguous()
    optim_meta = {}
    for name, optimizer in optimizers.items():
        saved = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for param_id, slots in saved["state"].items():
            for key, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"optim/{name}/{param_id}/{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(param_id), {})[key] = value
        optim_meta[name] = {"param_groups": saved["param_groups"], "scalars": scalars}
    meta = {
        "checkpoint_format": CHECKPOINT_FORMAT,
        "method": method,
        "config": config,
        "epoch": state.epoch,
        "losses": state.losses,
        "optimizers": optim_meta,
    }
    data = save(tensors, metadata={"edgead": json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(
    path: Path, method: str, config: dict[str, Any], modules: Mapping[str, torch.nn.Module], optimizers: Mapping[str, torch.optim.Optimizer]
) -> TrainState:
    """Restore a checkpoint of the same method and config into `modules` and `optimizers`; returns its progress."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise ConfigError(f"--resume {path}: no such checkpoint (it is written after each epoch, beside --out)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("edgead", "null"))
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for a torn or foreign file
        raise ConfigError(f"--resume {path} is not an edgead training checkpoint ({exc})") from None
    if not isinstance(meta, dict) or meta.get("checkpoint_format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"--resume {path} is not an edgead training checkpoint")
    if meta["method"] != method:
        raise ConfigError(f"--resume {path} is a checkpoint of --method {meta['method']}, not {method}; resume it with --method {meta['method']} or start afresh")
    config = json.loads(json.dumps(config))  # as the checkpoint stores it: tuples (feature_stages) come back as lists
    differ = sorted(key for key in set(config) | set(meta["config"])
                    if key not in AFTER_TRAINING_KEYS and config.get(key) != meta["config"].get(key))
    if differ:
        shown = ", ".join(f"{key} {meta['config'].get(key)!r} -> {config.get(key)!r}" for key in differ)
        raise ConfigError(f"--resume {path} was trained with other settings ({shown}); use the same options, or start afresh without --resume")
    for name, module in modules.items():
        prefix = f"module/{name}/"
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, optimizer in optimizers.items():
        saved = meta["optimizers"][name]
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            parts = key.split("/")
            if parts[0] == "optim" and parts[1] == name:
                state.setdefault(int(parts[2]), {})[parts[3]] = value
        for param_id, scalars in saved["scalars"].items():
            state.setdefault(int(param_id), {}).update(scalars)
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    return TrainState(epoch=int(meta["epoch"]), losses=[float(x) for x in meta["losses"]])


def checkpoint_path_for(out: str | Path) -> Path:
    """Where `edgead train --out X` keeps its training checkpoint: X.ckpt beside it."""
    out = Path(out)
    return out.with_name(out.name + ".ckpt")


def run_epochs(
    step: Callable[[int, np.random.Generator], Iterable[float]],
    steps_per_epoch: int,
    epochs: int,
    *,
    seed: int,
    method: str,
    config: dict[str, Any],
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    checkpoint: Path | None = None,
    resume: Path | None = None,
    progress: Progress = silent_progress,
    report: Callable[[str], None] | None = None,
) -> TrainState:
    """Train `epochs` epochs: `step(epoch, rng)` yields the loss of each of its `steps_per_epoch` steps.

    After each epoch the checkpoint (if any) is written; `resume` continues a stopped run from its
    last finished epoch. `report` receives one line per epoch (default: stderr).
    """
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    state = load_checkpoint(resume, method, config, modules, optimizers) if resume else TrainState()
    say = report or (lambda line: print(line, file=sys.stderr, flush=True))
    if resume:
        say(f"resumed {resume} after epoch {state.epoch} of {epochs}")
    for module in modules.values():
        module.train()
    for epoch in range(state.epoch, epochs):
        torch.manual_seed(seed * 100_003 + epoch)
        rng = np.random.default_rng([seed, epoch])
        started, losses = time.perf_counter(), []
        last = f" (last epoch's loss {state.losses[-1]:.5f})" if state.losses else ""
        with progress(f"epoch {epoch + 1}/{epochs}{last}", steps_per_epoch) as advance:
            for loss in step(epoch, rng):
                losses.append(float(loss))
                advance(1)
        if not losses or not np.isfinite(np.mean(losses)):
            raise ConfigError(f"training diverged in epoch {epoch + 1} (loss {np.mean(losses) if losses else 'none'}); lower the learning rate")
        state.epoch, state.losses = epoch + 1, state.losses + [float(np.mean(losses))]
        if checkpoint is not None:
            save_checkpoint(checkpoint, method, config, state, modules, optimizers)
        say(f"epoch {epoch + 1}/{epochs}: loss {state.losses[-1]:.5f} ({time.perf_counter() - started:.1f} s)")
    for module in modules.values():
        module.eval()
    return state
