"""Bounded reading of .edgead archives: size caps, members read on demand and re-checked, .npy headers checked first.

A model file may come from a stranger, so nothing it declares is allocated before it is checked
against what the file really holds and against caps the user can raise (`--max-model-mb`,
`--max-manifest-mb`). Members are read only when asked for, each time checked against its sha256,
and only small ones are kept in memory once read.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgead.errors import ArtifactError

# what a damaged or hostile archive makes zipfile and zlib raise; caught only around archive reads
ARCHIVE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
                  ValueError, struct.error, OverflowError, UnicodeDecodeError)
CACHE_BYTES = 16 << 20  # members up to this size are kept once read; larger ones are read again when asked for
CHUNK_BYTES = 1 << 20
NPY_HEADER_BYTES = 10_000  # numpy's own default limit for a trusted header; ours are under 200 bytes


@dataclass(frozen=True)
class ReadLimits:
    """How much a .edgead file may make the reader unpack: its manifest, all its members together, its entry count.

    The defaults fit the largest model edgead makes three times over: wide_resnet50_2 (25 M parameters, 95 MiB in
    fp32) with weights, ONNX, TorchScript and TensorRT engines in every precision and a bank of 100,000 x 1024 fp16
    features is about 0.7 GB; a manifest is under 1 MiB. `--max-model-mb` / `--max-manifest-mb` raise them.
    """

    manifest_bytes: int = 16 << 20
    total_bytes: int = 2 << 30
    entries: int = 4096

    def __post_init__(self) -> None:
        if self.manifest_bytes < 1 or self.total_bytes < 1 or self.entries < 1:
            raise ArtifactError(f"read limits must be positive, got {self}")

    @classmethod
    def from_mb(cls, model_mb: float | None = None, manifest_mb: float | None = None) -> ReadLimits:
        base = cls()
        return cls(
            manifest_bytes=int(manifest_mb * (1 << 20)) if manifest_mb is not None else base.manifest_bytes,
            total_bytes=int(model_mb * (1 << 20)) if model_mb is not None else base.total_bytes,
        )


DEFAULT_LIMITS = ReadLimits()


def mib(count: int) -> str:
    return f"{count / (1 << 20):,.1f} MiB"


DIRECTORY_BYTES_PER_ENTRY = 1024  # an edgead entry's directory record is about 100 bytes (header, name, zip64 sizes)


def check_directory(path: Path, handle: BinaryIO, limits: ReadLimits) -> None:
    """Refuse a zip whose central directory is too large before zipfile parses it (it makes an object per entry).

    Reads only the end-of-directory record (zipfile's own reader of it, zip64 included); a file without one is left
    to zipfile, which says it is not a zip.
    """
    end = zipfile._EndRecData(handle)  # noqa: SLF001 - the only reader of this record; stable since Python 2
    if end is None:
        return
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # noqa: SLF001
    if entries > limits.entries or size > limits.entries * DIRECTORY_BYTES_PER_ENTRY:
        raise ArtifactError(
            f"{path} declares {entries} entries in a {mib(size)} directory; a model has a few dozen (limit {limits.entries}): refusing to read it"
        )
    handle.seek(0)


def check_entries(path: Path, archive: zipfile.ZipFile, limits: ReadLimits) -> dict[str, int]:
    """Entry name -> declared unpacked size, once the entry count and the sum of sizes are within `limits`."""
    infos = archive.infolist()
    if len(infos) > limits.entries:
        raise ArtifactError(f"{path} has {len(infos)} entries; a model has a few dozen (limit {limits.entries}): refusing to read it")
    sizes: dict[str, int] = {}
    for info in infos:
        if info.filename in sizes:
            raise ArtifactError(f"{path} holds the same entry twice; refusing to guess which one is meant")
        sizes[info.filename] = info.file_size
    return sizes


def check_total(path: Path, sizes: Mapping[str, int], limits: ReadLimits) -> None:
    """Refuse members that unpack to more than `limits.total_bytes` together (or any one of them alone)."""
    total = sum(sizes.values())
    if total > limits.total_bytes:
        largest = max(sizes, key=sizes.get)
        raise ArtifactError(
            f"{path}: its members unpack to {mib(total)} (the largest, {largest!r}, {mib(sizes[largest])}), over the limit of "
            f"{mib(limits.total_bytes)}; if you trust this file and it is a model that large, raise it with --max-model-mb"
        )


def read_bounded(archive: zipfile.ZipFile, name: str, size: int) -> bytes:
    """An entry's bytes: at most its declared size (zipfile stops there), exactly that many or the file is corrupt."""
    with archive.open(name) as stream:
        data = stream.read(size + 1)
    if len(data) != size:
        raise ArtifactError(f"entry {name!r} holds {len(data)} bytes where its header says {size}")
    return data


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes what passes through and counts it (for .npy members read straight into arrays)."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner, self.digest, self.count = inner, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.inner.read(len(view))
        view[: len(data)] = data
        self.digest.update(data)
        self.count += len(data)
        return len(data)

    def read_exactly(self, n: int) -> bytes:
        data = bytearray(n)
        got = self.readinto_full(memoryview(data))
        return bytes(data[:got])

    def readinto_full(self, view: memoryview) -> int:
        done = 0
        while done < len(view):
            got = self.readinto(view[done : done + CHUNK_BYTES])
            if not got:
                break
            done += got
        return done


def read_npy(stream: HashingReader, size: int, label: str) -> np.ndarray:
    """A .npy array read from `stream` (`size` bytes in all), its header checked against the data before anything is allocated.

    Refuses object dtypes (pickle), negative or non-integer dimensions, and a shape whose bytes differ from what follows the header.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(stream, max_header_size=NPY_HEADER_BYTES)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(stream, max_header_size=NPY_HEADER_BYTES)
        else:
            raise ValueError(f"npy format version {version} is not one numpy writes")
    except (ValueError, SyntaxError, TypeError, struct.error, EOFError) as exc:
        raise ArtifactError(f"{label} is not a plain .npy array ({' '.join(str(exc).split())[:200]})") from None
    if dtype.hasobject or dtype.itemsize == 0:
        raise ArtifactError(f"{label} is not a plain .npy array: it holds {dtype} values (an object array would need pickle)")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ArtifactError(f"{label} has shape {shape}; array dimensions are counts (0 or more)")
    data_bytes = size - stream.count
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != data_bytes:
        raise ArtifactError(
            f"{label} claims shape {shape} of {dtype} ({claimed:,} bytes) but holds {data_bytes:,} bytes of data; "
            "the file is corrupt or was tampered with"
        )
    try:
        array = np.empty(shape[::-1] if fortran else shape, dtype)
    except MemoryError:
        raise ArtifactError(f"{label}: not enough memory for its {mib(claimed)} array; free memory or use a smaller model") from None
    if claimed:
        got = stream.readinto_full(memoryview(array.reshape(-1).view(np.uint8)))
        if got != claimed:
            raise ArtifactError(f"{label} ended after {got:,} of its {claimed:,} bytes of data; the file is truncated")
    return array.T if fortran else array


class ZipMembers(Mapping):
    """The members of a .edgead file, by name -> bytes, read from the file when asked for and checked against their sha256.

    The file is opened again for each read: a file that changed since it was opened fails its hash check, it is not
    read as something else. Members up to CACHE_BYTES are kept after their first read.
    """

    def __init__(self, path: Path, entries: Mapping[str, tuple[str, int]]) -> None:
        self.path = path  # as the user gave it, for messages
        self._file = path.resolve()  # what is opened again, whatever the working directory is by then
        self.entries = dict(entries)  # name -> (sha256, bytes)
        self._cache: dict[str, bytes] = {}

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def size(self, name: str) -> int:
        return self.entries[name][1]

    def __getitem__(self, name: str) -> bytes:
        if name in self._cache:
            return self._cache[name]
        sha256, size = self.entries[name]
        try:
            with zipfile.ZipFile(self._file) as archive:
                data = read_bounded(archive, name, size)
        except MemoryError:
            raise ArtifactError(f"{self.path}: not enough memory to read member {name!r} ({mib(size)}); free memory and run again") from None
        except ArtifactError as exc:
            raise ArtifactError(f"{self.path}: {exc}; the file is corrupt") from None
        except OSError as exc:
            raise ArtifactError(f"{self.path} could not be read again: {exc}") from None
        except ARCHIVE_ERRORS as exc:
            raise ArtifactError(f"{self.path}: member {name!r} is corrupt ({type(exc).__name__}: {exc})") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactError(f"{self.path}: member {name!r} is corrupt or changed since the model was opened (sha256 mismatch)")
        if size <= CACHE_BYTES:
            self._cache[name] = data
        return data

    def load_npy(self, name: str) -> np.ndarray:
        """The .npy member `name`, streamed from the file into its array (no second copy of its bytes)."""
        sha256, size = self.entries[name]
        label = f"{self.path}: member {name!r}"
        try:
            with zipfile.ZipFile(self._file) as archive, archive.open(name) as raw:
                stream = HashingReader(raw)
                array = read_npy(stream, size, label)
                if stream.read_exactly(1):
                    raise ArtifactError(f"{label} holds more bytes than its header says")
        except OSError as exc:
            raise ArtifactError(f"{self.path} could not be read again: {exc}") from None
        except ARCHIVE_ERRORS as exc:
            raise ArtifactError(f"{label} is corrupt ({type(exc).__name__}: {exc})") from None
        if stream.digest.hexdigest() != sha256:
            raise ArtifactError(f"{label} is corrupt or changed since the model was opened (sha256 mismatch)")
        return array


def hash_entry(archive: zipfile.ZipFile, name: str, size: int) -> str:
    """The sha256 of an entry, streamed in chunks (nothing held), after checking it holds exactly `size` bytes."""
    digest, count = hashlib.sha256(), 0
    with archive.open(name) as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
            count += len(chunk)
    if count != size:
        raise ArtifactError(f"entry {name!r} holds {count} bytes where its header says {size}")
    return digest.hexdigest()


def load_npy_bytes(data: bytes, label: str) -> np.ndarray:
    """A .npy array from bytes held in memory, with the same header checks as a streamed member."""
    stream = HashingReader(io.BytesIO(data))
    array = read_npy(stream, len(data), label)
    if stream.count != len(data):
        raise ArtifactError(f"{label} holds more bytes than its header says")
    return array
