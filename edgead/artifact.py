"""The .edgead artifact: a zip with manifest.json and the members it names, checked on read.

No pickle anywhere: members are JSON, .npy (header checked, no object arrays), safetensors,
ONNX, TorchScript or engine bytes, each with its sha256 in the manifest. Reading is bounded
(edgead.reading) and may check a signature over the manifest (edgead.signing). TorchScript
engines are programs: the runtime loads them only for a model the user trusts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edgead.errors import ArtifactError
from edgead.graphs import FORMAT_VERSION, MAIN_GRAPH, READABLE_VERSIONS, graph_specs, head_section, upgrade_manifest
from edgead.reading import (
    ARCHIVE_ERRORS, DEFAULT_LIMITS, ReadLimits, ZipMembers, check_directory, check_entries, check_total, hash_entry, load_npy_bytes, mib, read_bounded,
)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # an Ed25519 signature over manifest.json's bytes (`edgead sign`); not listed in the manifest
SIGNATURE_MAX = 4096

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
    """A validated .edgead file: its manifest and its members (name -> bytes; from a file, read on demand and re-checked).

    `signed_by`: the key id of the user's own key whose signature over the manifest was verified on reading, else None.
    """

    path: Path
    manifest: dict[str, Any]
    members: Mapping[str, bytes]
    signed_by: str | None = None

    def member(self, name: str) -> bytes:
        if name not in self.members:
            raise ArtifactError(f"{self.path}: member {name!r} is not in the artifact (it has {sorted(self.members)})")
        return self.members[name]

    def load_npy(self, name: str) -> np.ndarray:
        """A .npy member; its header is checked against its size before the array is allocated."""
        if name not in self.members:
            raise ArtifactError(f"{self.path}: member {name!r} is not in the artifact (it has {sorted(self.members)})")
        if isinstance(self.members, ZipMembers):
            return self.members.load_npy(name)
        return load_npy_bytes(self.members[name], f"{self.path}: member {name!r}")

    def engine(self, backend: str, precision: str | None = None, graph: str = MAIN_GRAPH) -> dict[str, Any] | None:
        """The manifest entry of `graph`'s engine for `backend` (and precision), or None."""
        for entry in self.manifest["engines"]:
            if entry.get("graph") == graph and entry.get("backend") == backend and (precision is None or entry.get("precision") == precision):
                return entry
        return None


def read_artifact(path: str | os.PathLike, limits: ReadLimits = DEFAULT_LIMITS, verify_key: str | os.PathLike | None = None) -> Artifact:
    """Open and fully validate a .edgead file: zip, sizes, manifest, member names, hashes (streamed: nothing large is held).

    `limits` caps what the file may make the reader unpack. `verify_key`: a public key file (`edgead keygen`); the model
    must then carry a valid signature by that key over its manifest, and comes back with `signed_by` set.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file {path} does not exist: train one with `edgead train DATA_DIR` or pass --model FILE")
    try:
        with open(path, "rb") as handle:
            check_directory(path, handle, limits)
            archive = zipfile.ZipFile(handle)
            sizes = check_entries(path, archive, limits)
            for name in sizes:
                check_member_name(name)
            check_total(path, {name: size for name, size in sizes.items() if name not in (MANIFEST, SIGNATURE)}, limits)
            if MANIFEST not in sizes:
                raise ArtifactError(f"{path} has no {MANIFEST}: it is not an edgead artifact")
            if sizes[MANIFEST] > limits.manifest_bytes:
                raise ArtifactError(
                    f"{path}: {MANIFEST} is {mib(sizes[MANIFEST])}, over the limit of {mib(limits.manifest_bytes)} (a model's is under 1 MiB); "
                    "if you trust this file, raise it with --max-manifest-mb"
                )
            raw_manifest = read_bounded(archive, MANIFEST, sizes[MANIFEST])
            try:
                manifest = json.loads(raw_manifest.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise ArtifactError(f"{path}: {MANIFEST} is not valid JSON ({type(exc).__name__}); the file is corrupt") from None
            signed_by = None
            if verify_key is not None:
                from edgead.signing import verify_manifest

                signature = None
                if SIGNATURE in sizes:
                    if sizes[SIGNATURE] > SIGNATURE_MAX:
                        raise ArtifactError(f"{path}: {SIGNATURE} is {sizes[SIGNATURE]} bytes; a signature is under {SIGNATURE_MAX}")
                    signature = read_bounded(archive, SIGNATURE, sizes[SIGNATURE])
                signed_by = verify_manifest(path, raw_manifest, signature, verify_key)
            manifest = validate_manifest(manifest, str(path))
            listed = {name: sizes.get(name) for name in manifest["members"]}
            for name, size in listed.items():
                if size is None:
                    raise ArtifactError(f"{path}: member {name!r} listed in the manifest is missing from the archive")
            entries = {}
            for name, entry in manifest["members"].items():
                if "bytes" in entry and entry["bytes"] != sizes[name]:
                    raise ArtifactError(f"{path}: member {name!r} has {sizes[name]} bytes, the manifest says {entry['bytes']}; the file is corrupt")
                if hash_entry(archive, name, sizes[name]) != entry["sha256"]:
                    raise ArtifactError(f"{path}: member {name!r} is corrupt (sha256 mismatch); re-train or re-export the model")
                entries[name] = (entry["sha256"], sizes[name])
    except ArtifactError:
        raise
    except MemoryError:
        raise ArtifactError(f"{path}: not enough memory to read it; free memory, or check that this is an edgead model") from None
    except OSError as exc:
        raise ArtifactError(f"{path} could not be read: {exc}") from None
    except ARCHIVE_ERRORS as exc:
        raise ArtifactError(f"{path} is not a readable .edgead archive ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                            "the file is corrupt or truncated") from None
    return Artifact(path=path, manifest=manifest, members=ZipMembers(path, entries), signed_by=signed_by)


def write_artifact(path: str | os.PathLike, manifest: dict[str, Any], members: Mapping[str, bytes]) -> Path:
    """Write atomically: a temporary file beside `path`, fsync, then rename; `members` hashed into the manifest.

    The temporary file is locked while it is written, so that the next write beside it can tell one left by
    a killed writer (unlocked, and older than STALE_TEMP_S) and remove it.
    """
    path = Path(path)
    manifest = json.loads(json.dumps(manifest))  # a deep copy that is also proof it serialises
    manifest["members"] = {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in members.items()}
    for name in members:
        check_member_name(name)
        if name in (MANIFEST, SIGNATURE):
            raise ArtifactError(f"member name {name!r} is reserved")
    manifest = validate_manifest(manifest, str(path))
    with atomic_archive(path) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@contextlib.contextmanager
def atomic_archive(path: Path) -> Iterator[zipfile.ZipFile]:
    """A zip being written to a locked temporary file beside `path`, renamed over it only when the block succeeds."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ArtifactError(f"cannot write {path}: {exc}; pick another --out") from None
    try:
        _lock(fd, blocking=True)  # held until the file is closed: renamed, or its writer gone
        os.fchmod(fd, file_mode(path))  # mkstemp makes 0600: a service user could not read the model
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
                yield archive
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise ArtifactError(f"could not write {path}: {exc}; nothing was changed (free some disk space or pick another --out)") from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


STALE_TEMP_S = 10.0  # a temporary file this old that no writer holds locked is what a killed write left behind


def _lock(fd: int, blocking: bool) -> bool:
    """An exclusive advisory lock on `fd`: True when taken (always True where there is no fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the age rule alone decides
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files that interrupted writes of `path` left beside it; returns those removed."""
    removed = []
    for candidate in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        try:
            if time.time() - candidate.stat().st_mtime < STALE_TEMP_S:
                continue  # it may be a writer's that has not locked it yet
            fd = os.open(candidate, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock(fd, blocking=False):
                candidate.unlink(missing_ok=True)
                removed.append(candidate)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


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
