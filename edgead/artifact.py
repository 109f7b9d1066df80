"""The .edgead artifact: a zip with manifest.json and the members it names, checked on read.

No pickle anywhere: members are JSON, .npy (read with allow_pickle=False), safetensors,
ONNX, TorchScript or engine bytes, each with its sha256 in the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edgead.errors import ArtifactError
from edgead.graphs import FORMAT_VERSION, MAIN_GRAPH, READABLE_VERSIONS, graph_specs, head_section, upgrade_manifest

MANIFEST = "manifest.json"
MAX_MEMBER_BYTES = 4 << 30  # no model member comes near this; a larger one is a zip bomb, not a model

# key path -> expected type(s), for every detector; checked on every read so a bad file fails with the key's name.
# A head checks its own section (memory bank, SVM, codebook, ...) when it opens, with `require_keys`.
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "method": str,
    "config": dict,
    "input": dict,
    "input.size_px": list,
    "input.color_order": str,
    "input.dtype": str,
    "input.layout": str,
    "input.normalisation": dict,
    "postprocess": dict,
    "postprocess.blur_sigma_px": (int, float),
    "postprocess.image_threshold": (int, float),
    "weights": dict,
    "weights.member": str,
    "engines": list,
    "members": dict,
}
# format 1 (PatchCore only) required its sections on read; they are checked before the upgrade
FORMAT1_KEYS: dict[str, type | tuple[type, ...]] = {
    "features": dict,
    "features.channels": int,
    "features.grid": list,
    "features.stride_px": int,
    "memory_bank": dict,
    "memory_bank.member": str,
    "memory_bank.count": int,
    "memory_bank.dim": int,
    "memory_bank.dtype": str,
    "memory_bank.k": int,
}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _get(manifest: dict, key_path: str) -> Any:
    node: Any = manifest
    for part in key_path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key_path)
        node = node[part]
    return node


def check_member_name(name: str) -> None:
    """Refuse a member name that could leave the archive's folder when extracted."""
    pure = PurePosixPath(name)
    if not name or "\\" in name or pure.is_absolute() or ".." in pure.parts or ":" in name:
        raise ArtifactError(f"artifact member name {name!r} tries to escape its folder; refusing to read this file")


def require_keys(manifest: dict, keys: dict[str, type | tuple[type, ...]], source: str = "manifest") -> None:
    """Raise ArtifactError naming the first key of `keys` (dotted paths) that is missing or of the wrong type."""
    for key, kind in keys.items():
        try:
            value = _get(manifest, key)
        except KeyError:
            raise ArtifactError(f"{source}: manifest key {key!r} is missing; the file is incomplete — re-train or re-export it") from None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ArtifactError(f"{source}: manifest key {key!r} has {type(value).__name__} {value!r}, expected {kind}")


def named_members(node: Any) -> list[str]:
    """Every member the manifest refers to: the value of each "member" key, at any depth (members table excluded)."""
    if isinstance(node, dict):
        found = [node["member"]] if isinstance(node.get("member"), str) else []
        return found + [name for key, value in node.items() if key != "members" for name in named_members(value)]
    if isinstance(node, list):
        return [name for value in node for name in named_members(value)]
    return []


def validate_manifest(manifest: Any, source: str = "manifest") -> dict[str, Any]:
    """Check version, required keys, graphs, head and member references; returns the manifest in the current format.

    Raises ArtifactError naming the first bad key. A format-1 manifest comes back upgraded (in memory).
    """
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{source}: manifest.json must hold a JSON object")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        hint = (
            "it was written by a newer edgead: upgrade edgead"
            if isinstance(version, int) and version > FORMAT_VERSION
            else "re-train or re-export it with this edgead"
        )
        raise ArtifactError(f"{source}: format_version {version!r} is not supported (this edgead reads {READABLE_VERSIONS}); {hint}")
    require_keys(manifest, REQUIRED_KEYS, source)
    if version == 1:
        require_keys(manifest, FORMAT1_KEYS, source)
        manifest = upgrade_manifest(manifest)
    graph_specs(manifest, source)
    head_section(manifest, source)
    for name, entry in manifest["members"].items():
        check_member_name(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise ArtifactError(f"{source}: manifest key 'members.{name}' lacks its sha256")
    for name in named_members(manifest):
        if name not in manifest["members"]:
            raise ArtifactError(f"{source}: manifest names member {name!r} but does not list it under 'members'")
    return manifest


@dataclass
class Artifact:
    """A validated .edgead file held in memory: its manifest and member bytes."""

    path: Path
    manifest: dict[str, Any]
    members: dict[str, bytes]

    def member(self, name: str) -> bytes:
        if name not in self.members:
            raise ArtifactError(f"{self.path}: member {name!r} is not in the artifact (it has {sorted(self.members)})")
        return self.members[name]

    def load_npy(self, name: str) -> np.ndarray:
        try:
            return np.load(io.BytesIO(self.member(name)), allow_pickle=False)
        except ValueError as exc:
            raise ArtifactError(f"{self.path}: member {name!r} is not a plain .npy array ({exc})") from None

    def engine(self, backend: str, precision: str | None = None, graph: str = MAIN_GRAPH) -> dict[str, Any] | None:
        """The manifest entry of `graph`'s engine for `backend` (and precision), or None."""
        for entry in self.manifest["engines"]:
            if entry.get("graph") == graph and entry.get("backend") == backend and (precision is None or entry.get("precision") == precision):
                return entry
        return None


def read_artifact(path: str | os.PathLike) -> Artifact:
    """Open and fully validate a .edgead file: zip, manifest, member names, hashes."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file {path} does not exist: train one with `edgead train DATA_DIR` or pass --model FILE")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise ArtifactError(f"{path} holds the same entry twice; refusing to guess which one is meant")
            sizes = {info.filename: info.file_size for info in infos}
            for name in names:
                check_member_name(name)
                if sizes[name] > MAX_MEMBER_BYTES:
                    raise ArtifactError(f"{path}: entry {name!r} unpacks to {sizes[name]} bytes; refusing to read it")
            if MANIFEST not in names:
                raise ArtifactError(f"{path} has no {MANIFEST}: it is not an edgead artifact")
            try:
                manifest = json.loads(archive.read(MANIFEST).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ArtifactError(f"{path}: {MANIFEST} is not valid JSON ({exc}); the file is corrupt") from None
            manifest = validate_manifest(manifest, str(path))
            members: dict[str, bytes] = {}
            for name, entry in manifest["members"].items():
                if name not in sizes:
                    raise ArtifactError(f"{path}: member {name!r} listed in the manifest is missing from the archive")
                if "bytes" in entry and entry["bytes"] != sizes[name]:
                    raise ArtifactError(f"{path}: member {name!r} has {sizes[name]} bytes, the manifest says {entry['bytes']}; the file is corrupt")
                data = archive.read(name)
                if sha256_bytes(data) != entry["sha256"]:
                    raise ArtifactError(f"{path}: member {name!r} is corrupt (sha256 mismatch); re-train or re-export the model")
                members[name] = data
    except zipfile.BadZipFile as exc:
        raise ArtifactError(f"{path} is not a readable .edgead archive ({exc}); the file is corrupt or truncated") from None
    except zipfile.LargeZipFile as exc:  # pragma: no cover - only with >4 GiB members
        raise ArtifactError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ArtifactError(f"{path} could not be read: {exc}") from None
    return Artifact(path=path, manifest=manifest, members=members)


def write_artifact(path: str | os.PathLike, manifest: dict[str, Any], members: dict[str, bytes]) -> Path:
    """Write atomically: a temporary file beside `path`, fsync, then rename; `members` hashed into the manifest."""
    path = Path(path)
    manifest = json.loads(json.dumps(manifest))  # a deep copy that is also proof it serialises
    manifest["members"] = {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in members.items()}
    for name in members:
        check_member_name(name)
        if name == MANIFEST:
            raise ArtifactError(f"member name {MANIFEST!r} is reserved")
    manifest = validate_manifest(manifest, str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ArtifactError(f"cannot write {path}: {exc}; pick another --out") from None
    try:
        os.fchmod(fd, file_mode(path))  # mkstemp makes 0600: a service user could not read the model
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
                archive.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
                for name, data in members.items():
                    archive.writestr(name, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise ArtifactError(f"could not write {path}: {exc}; nothing was changed (free some disk space or pick another --out)") from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    """The process umask (read by setting and restoring it: there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(path: Path) -> int:
    """Permission bits for a file written at `path`: the mode of the file it replaces, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
