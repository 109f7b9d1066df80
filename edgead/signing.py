"""Ed25519 signatures over a model's manifest: `edgead keygen`, `edgead sign`, and `--verify-key` when a model is read.

The signature covers manifest.json's exact bytes; the manifest holds every member's sha256, and reading checks
each member against it, so a valid signature vouches for every byte of the model. It says who made the file
(whoever holds the private key), not that the model is any good. `cryptography` is imported only here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from edgead.errors import ArtifactError, ConfigError, DependencyError

ALGORITHM = "ed25519"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise DependencyError("signing and verifying models needs cryptography: pip install 'edgead[sign]'") from None
    return serialization, ed25519


def key_id(public_key: Any) -> str:
    """A short, stable name of a public key: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(private_path: Path, force: bool = False) -> tuple[Path, Path, str]:
    """Write a new Ed25519 private key (PEM, PKCS#8, mode 0600) and its public key beside it (`.pub`); returns both and the key id."""
    serialization, ed25519 = _crypto()
    public_path = private_path.with_name(private_path.name + ".pub")
    for target in (private_path, public_path):
        if target.exists() and not force:
            raise ConfigError(f"{target} exists; keep that key, choose another name, or pass --force to replace it")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.unlink(missing_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path, key_id(key.public_key())


def load_private_key(path: Path) -> Any:
    serialization, ed25519 = _crypto()
    data = _read_key_file(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key ({exc}); make one with `edgead keygen KEY`") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} is a {type(key).__name__}; edgead signs with Ed25519 keys: make one with `edgead keygen KEY`")
    return key


def load_public_key(path: str | os.PathLike) -> Any:
    serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_key_file(path, "public")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        hint = " (that is the private key: give its .pub)" if b"PRIVATE KEY" in data else ""
        raise ConfigError(f"--verify-key {path} is not a PEM public key{hint}; `edgead keygen KEY` writes KEY.pub") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"--verify-key {path} is a {type(key).__name__}; edgead verifies Ed25519 keys (`edgead keygen`)")
    return key


def _read_key_file(path: Path, kind: str) -> bytes:
    try:
        data = path.read_bytes() if path.stat().st_size <= 16384 else b""
    except OSError as exc:
        raise ConfigError(f"cannot read the {kind} key {path}: {exc.strerror}") from None
    if not data:
        raise ConfigError(f"{path} is not a {kind} key file (empty or too large)")
    return data


def signature_bytes(private_key: Any, raw_manifest: bytes) -> bytes:
    """The signature entry: JSON with the algorithm, the signer's key id and the base64 signature of the manifest's bytes."""
    record = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(raw_manifest)).decode("ascii"),
    }
    return json.dumps(record, indent=2).encode("utf-8")


def verify_manifest(path: Path, raw_manifest: bytes, signature: bytes | None, public_key_path: str | os.PathLike) -> str:
    """The key id of `public_key_path` when `signature` is its valid signature of `raw_manifest`; else ArtifactError."""
    public_key = load_public_key(public_key_path)
    from cryptography.exceptions import InvalidSignature

    wanted = key_id(public_key)
    sign_hint = f"sign it on the build machine with `edgead sign --key KEY {path.name}` (KEY: the private half of {Path(public_key_path).name})"
    if signature is None:
        raise ArtifactError(f"{path} is not signed, and --verify-key {public_key_path} accepts only models signed by key {wanted}; {sign_hint}")
    try:
        record = json.loads(signature.decode("utf-8"))
        algorithm, signer, value = record["algorithm"], record["key_id"], base64.b64decode(record["signature"], validate=True)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ArtifactError(f"{path}: its signature entry is unreadable; the file is corrupt or was tampered with") from None
    if algorithm != ALGORITHM:
        raise ArtifactError(f"{path} is signed with {algorithm!r}; edgead verifies {ALGORITHM} signatures only")
    if signer != wanted:
        raise ArtifactError(f"{path} is signed by key {signer}, not by {wanted} (--verify-key {public_key_path}); refusing it")
    try:
        public_key.verify(value, raw_manifest)
    except InvalidSignature:
        raise ArtifactError(
            f"{path}: the signature by key {signer} does not match the manifest: the model was changed after it was signed; refusing it"
        ) from None
    return signer


def sign_artifact(path: Path, key_path: Path, out: Path | None = None, limits: Any = None) -> tuple[Path, str]:
    """Check `path` fully, then write it (to `out`, default in place, atomically) with a signature of its manifest by `key_path`."""
    from edgead.artifact import MANIFEST, SIGNATURE, atomic_archive, read_artifact
    from edgead.reading import CHUNK_BYTES, DEFAULT_LIMITS, read_bounded

    limits = limits or DEFAULT_LIMITS
    private_key = load_private_key(key_path)
    artifact = read_artifact(path, limits)  # every member checked against the manifest that is about to be signed
    target = out or path
    try:
        with zipfile.ZipFile(path) as source:
            raw_manifest = read_bounded(source, MANIFEST, source.getinfo(MANIFEST).file_size)
            with atomic_archive(target) as archive:
                archive.writestr(MANIFEST, raw_manifest)  # the very bytes signed
                archive.writestr(SIGNATURE, signature_bytes(private_key, raw_manifest))
                for name in artifact.members:  # entries the manifest does not list are not carried over
                    with source.open(name) as reading, archive.open(name, "w", force_zip64=artifact.members.size(name) >= 1 << 31) as writing:
                        while chunk := reading.read(CHUNK_BYTES):
                            writing.write(chunk)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"could not sign {path}: {exc}") from None
    read_artifact(target, limits)
    return target, key_id(private_key.public_key())
