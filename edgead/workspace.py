"""The workspace default: after `edgead train`, later commands find the model without --model."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgead.errors import ConfigError

WORKSPACE_FILE = ".edgead-workspace.json"
ENV_MODEL = "EDGEAD_MODEL"


def remember_model(model_path: Path, folder: Path | None = None) -> Path:
    """Record `model_path` as the default model of the workspace (the current folder)."""
    target = (folder or Path.cwd()) / WORKSPACE_FILE
    target.write_text(json.dumps({"model": str(Path(model_path).resolve())}, indent=2) + "\n", encoding="utf-8")
    return target


def resolve_model(explicit: str | os.PathLike | None, folder: Path | None = None) -> Path:
    """--model if given, else $EDGEAD_MODEL, else the workspace default, else ./model.edgead."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_MODEL):
        return Path(os.environ[ENV_MODEL])
    folder = folder or Path.cwd()
    record = folder / WORKSPACE_FILE
    if record.is_file():
        try:
            return Path(json.loads(record.read_text(encoding="utf-8"))["model"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{record} is damaged: delete it, or pass --model FILE") from None
    fallback = folder / "model.edgead"
    if fallback.is_file():
        return fallback
    raise ConfigError("no model given and none trained here: run `edgead train DATA_DIR` first, or pass --model FILE")
