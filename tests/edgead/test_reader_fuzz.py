"""The reader against hostile files: truncations, bit flips, oversized headers and sizes, hostile names.

Whatever the bytes, reading a model and every member of it ends in an ArtifactError or in valid data:
never another exception (a traceback), never an allocation the file's own bytes do not back.
"""

import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgead.artifact import FORMAT_VERSION, MANIFEST, npy_bytes, read_artifact, remove_stale_temps, write_artifact
from edgead.errors import ArtifactError
from edgead.reading import ReadLimits


def small_manifest():
    return {
        "format_version": FORMAT_VERSION,
        "method": "patchcore",
        "config": {},
        "input": {"size_px": [64, 64], "color_order": "RGB", "dtype": "uint8", "layout": "NHWC", "normalisation": {}},
        "features": {"channels": 4, "grid": [8, 8], "stride_px": 8},
        "graphs": {
            "features": {
                "inputs": [{"name": "images", "shape": ["batch", 64, 64, 3], "dtype": "uint8"}],
                "outputs": [{"name": "features", "shape": ["batch", 4, 8, 8], "dtype": "float32"}],
            }
        },
        "head": {"name": "knn", "graph": "features", "output": "features"},
        "memory_bank": {"member": "bank.npy", "count": 3, "dim": 4, "dtype": "float16", "k": 1},
        "postprocess": {"blur_sigma_px": 4.0, "image_threshold": 1.0},
        "weights": {"member": "weights.bin", "format": "raw"},
        "engines": [],
    }


BANK = np.arange(12, dtype=np.float16).reshape(3, 4)


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    path = write_artifact(tmp_path_factory.mktemp("fuzz") / "m.edgead", small_manifest(), {"bank.npy": npy_bytes(BANK), "weights.bin": b"\x01" * 64})
    return path.read_bytes()


def read_everything(path, limits=ReadLimits()):
    """What the runtime does with a model: read it, then every member; returns the bank, or raises."""
    artifact = read_artifact(path, limits)
    for name in artifact.members:
        artifact.member(name)
    return artifact.load_npy("bank.npy")


def outcome(path, limits=ReadLimits()):
    try:
        return read_everything(path, limits)
    except ArtifactError as exc:
        message = str(exc)
        assert "\n" not in message and message, "an ArtifactError is one line"
        return exc


def fixed_zip(entries: dict[str, bytes], edit=None, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of `entries` whose manifest lists each member with its true sha256 and size (after `edit(manifest)`)."""
    import hashlib

    manifest = json.loads(entries[MANIFEST])
    members = {k: v for k, v in entries.items() if k != MANIFEST}
    manifest["members"] = {k: {"sha256": hashlib.sha256(v).hexdigest(), "bytes": len(v)} for k, v in members.items()}
    if edit:
        edit(manifest)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest))
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def entries_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_untouched_file_reads(model_bytes, tmp_path):
    path = tmp_path / "m.edgead"
    path.write_bytes(model_bytes)
    assert np.array_equal(read_everything(path), BANK)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_files_are_artifact_errors(model_bytes, tmp_path, data):
    cut = data.draw(st.integers(min_value=0, max_value=len(model_bytes) - 1))
    path = tmp_path / "cut.edgead"
    path.write_bytes(model_bytes[:cut])
    assert isinstance(outcome(path), ArtifactError)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bit_flips_end_in_an_artifact_error_or_the_same_data(model_bytes, tmp_path, data):
    flipped = bytearray(model_bytes)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(flipped) - 1))
        flipped[position] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    path = tmp_path / "flipped.edgead"
    path.write_bytes(bytes(flipped))
    result = outcome(path)
    if not isinstance(result, ArtifactError):  # a flip in a timestamp, an unused field, the zip comment: the data is the same
        assert np.array_equal(result, BANK)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(min_value=-(2**40), max_value=2**62), min_size=0, max_size=4),
       dtype=st.sampled_from(["<f2", "<f4", "|u1", "<i8", "|O", "<U8", "|V0", "bogus"]),
       tail=st.integers(min_value=0, max_value=96))
def test_npy_headers_are_checked_before_allocation(model_bytes, tmp_path, shape, dtype, tail):
    header = "{'descr': %r, 'fortran_order': False, 'shape': %s, }" % (dtype, repr(tuple(shape)))
    member = npy_with_header(header) + b"\x00" * tail
    entries = entries_of(model_bytes)
    entries["bank.npy"] = member
    path = tmp_path / "npy.edgead"
    path.write_bytes(fixed_zip(entries))
    result = outcome(path)
    if not isinstance(result, ArtifactError):  # only a header that says exactly what the data holds is read
        assert result.nbytes == tail and result.dtype == np.dtype(dtype)


def npy_with_header(header: str, version=(1, 0)) -> bytes:
    text = header.encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    size = struct.pack("<H", len(text)) if version == (1, 0) else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes(version) + size + text


def test_the_hostile_npy_of_issue_20_is_refused_before_allocating(model_bytes, tmp_path):
    entries = entries_of(model_bytes)
    entries["bank.npy"] = npy_with_header("{'descr': '<f2', 'fortran_order': False, 'shape': (1000000000000, 152), }") + b"\x00" * 64
    path = tmp_path / "npy.edgead"
    path.write_bytes(fixed_zip(entries))
    with pytest.raises(ArtifactError, match=r"claims shape \(1000000000000, 152\) of float16 .* but holds 64 bytes"):
        read_everything(path)


def test_oversized_npy_header_is_refused(model_bytes, tmp_path):
    entries = entries_of(model_bytes)
    entries["bank.npy"] = npy_with_header("{'descr': '<f2', 'fortran_order': False, 'shape': (3, 4), }" + " " * 200_000, version=(2, 0))
    path = tmp_path / "npy.edgead"
    path.write_bytes(fixed_zip(entries))
    with pytest.raises(ArtifactError, match="not a plain .npy array"):
        read_everything(path)


def test_a_member_declaring_3_gb_is_refused_from_the_directory(model_bytes, tmp_path):
    """The zip's own header says 3 GiB (the manifest agrees, as an attacker would make it): refused before reading a byte."""
    claimed = 3 << 30
    data = bytearray(fixed_zip(entries_of(model_bytes), edit=lambda m: m["members"]["weights.bin"].update(bytes=claimed)))
    central = data.index(b"PK\x01\x02")  # the central directory's headers, one per entry
    while data[central + 46 : central + 46 + len(b"weights.bin")] != b"weights.bin":
        central = data.index(b"PK\x01\x02", central + 4)
    data[central + 24 : central + 28] = struct.pack("<I", claimed)
    path = tmp_path / "big.edgead"
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"unpack to 3,072.* over the limit of 2,048.0 MiB.*--max-model-mb"):
        read_artifact(path)


def test_the_members_total_is_capped_and_the_cap_can_be_raised(model_bytes, tmp_path):
    path = tmp_path / "m.edgead"
    path.write_bytes(model_bytes)
    with pytest.raises(ArtifactError, match="over the limit of 0.0 MiB"):
        read_artifact(path, ReadLimits(total_bytes=100))
    assert read_artifact(path, ReadLimits(total_bytes=1000)).manifest["method"] == "patchcore"


def test_an_oversized_manifest_is_refused_unread(model_bytes, tmp_path):
    entries = entries_of(model_bytes)
    manifest = json.loads(entries[MANIFEST])
    manifest["padding"] = "x" * 5000
    entries[MANIFEST] = json.dumps(manifest).encode()
    path = tmp_path / "m.edgead"
    path.write_bytes(fixed_zip(entries))
    with pytest.raises(ArtifactError, match="manifest.json is .* over the limit .*--max-manifest-mb"):
        read_artifact(path, ReadLimits(manifest_bytes=4096))
    assert read_artifact(path).manifest["padding"]


def test_a_deeply_nested_manifest_is_an_artifact_error(model_bytes, tmp_path):
    entries = entries_of(model_bytes)
    entries[MANIFEST] = b"[" * 200_000 + b"]" * 200_000
    path = tmp_path / "m.edgead"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_artifact(path)


def test_too_many_entries_are_refused(model_bytes, tmp_path):
    entries = entries_of(model_bytes)
    entries.update({f"junk/{i}": b"" for i in range(50)})
    path = tmp_path / "m.edgead"
    path.write_bytes(fixed_zip(entries))
    with pytest.raises(ArtifactError, match="declares 53 entries"):
        read_artifact(path, ReadLimits(entries=20))


def test_a_huge_central_directory_is_refused_before_zipfile_parses_it(model_bytes, tmp_path, monkeypatch):
    entries = entries_of(model_bytes)
    entries.update({f"junk/{i}": b"" for i in range(5000)})
    path = tmp_path / "m.edgead"
    path.write_bytes(fixed_zip(entries))

    def parsed(*args, **kwargs):
        raise AssertionError("zipfile parsed the directory")

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", parsed)
    with pytest.raises(ArtifactError, match="declares 5003 entries"):
        read_artifact(path)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "C:evil", "dir\\..\\x"])
def test_hostile_member_names_are_refused(model_bytes, tmp_path, name):
    entries = entries_of(model_bytes)
    entries[name] = b"payload"
    path = tmp_path / "m.edgead"
    path.write_bytes(fixed_zip(entries))
    assert isinstance(outcome(path), ArtifactError)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_other_compressions_read_the_same(model_bytes, tmp_path, method):
    path = tmp_path / "m.edgead"
    path.write_bytes(fixed_zip(entries_of(model_bytes), compression=method))
    assert np.array_equal(read_everything(path), BANK)


def test_a_member_changed_after_opening_is_not_read(model_bytes, tmp_path):
    path = tmp_path / "m.edgead"
    path.write_bytes(model_bytes)
    artifact = read_artifact(path)
    entries = entries_of(model_bytes)
    entries["weights.bin"] = b"\x02" * 64
    path.write_bytes(fixed_zip(entries))
    with pytest.raises(ArtifactError, match="changed since the model was opened"):
        artifact.member("weights.bin")


def test_stale_temp_files_of_a_killed_write_are_removed_at_the_next_write(tmp_path):
    """A kill between writing the temporary file and renaming it leaves `.NAME.XXXX.tmp`; the next write removes it."""
    import fcntl

    target = tmp_path / "m.edgead"
    stale = tmp_path / ".m.edgead.k1ll3d.tmp"
    young = tmp_path / ".m.edgead.y0ung.tmp"
    busy = tmp_path / ".m.edgead.bu5y.tmp"
    other = tmp_path / ".other.edgead.k1ll3d.tmp"
    for file in (stale, young, busy, other):
        file.write_bytes(b"PK partial")
    hour_ago = os.path.getmtime(stale) - 3600
    for file in (stale, busy, other):
        os.utime(file, (hour_ago, hour_ago))
    with open(busy, "rb") as held:  # a writer that is still alive holds its temporary file locked
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        write_artifact(target, small_manifest(), {"bank.npy": npy_bytes(BANK), "weights.bin": b""})
        assert not stale.exists() and young.exists() and busy.exists() and other.exists()
    assert remove_stale_temps(target) == [busy]
    assert np.array_equal(read_artifact(target).load_npy("bank.npy"), BANK)


def test_a_writer_killed_in_the_rename_window_leaves_a_temp_file_the_next_write_removes(tmp_path, monkeypatch):
    """kill -9 of a real writer stopped just before its rename: its temporary file stays, unlocked; the next write removes it."""
    import signal
    import subprocess
    import sys
    import time

    import edgead.artifact as artifact_module

    target = tmp_path / "m.edgead"
    child = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time, numpy as np\n"
        "import edgead.artifact as a\n"
        "from pathlib import Path\n"
        "def stop(src, dst):\n"
        "    print('renaming', flush=True); time.sleep(60)\n"
        "a.os.replace = stop\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_reader_fuzz import small_manifest, BANK\n"
        f"a.write_artifact(Path({str(target)!r}), small_manifest(), {{'bank.npy': a.npy_bytes(BANK), 'weights.bin': b''}})\n"
    )], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "renaming"
        (left,) = tmp_path.glob(".m.edgead.*.tmp")
        assert remove_stale_temps(target) == []  # the writer is alive: its file is locked (and young)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
    assert left.exists() and not target.exists()
    monkeypatch.setattr(artifact_module, "STALE_TEMP_S", 0.0)
    time.sleep(0.01)
    write_artifact(target, small_manifest(), {"bank.npy": npy_bytes(BANK), "weights.bin": b""})
    assert not left.exists() and list(tmp_path.glob(".m.edgead.*.tmp")) == []
