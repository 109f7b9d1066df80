import json
import zipfile

import numpy as np
import pytest

from edgead.artifact import FORMAT_VERSION, MANIFEST, npy_bytes, read_artifact, write_artifact
from edgead.errors import ArtifactError


def minimal_manifest():
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


def format1_manifest():
    """What edgead 0.1.0 wrote: no graphs, no head, engines without a graph."""
    manifest = minimal_manifest()
    del manifest["graphs"], manifest["head"]
    manifest.update(format_version=1, config={"coreset_fraction": 0.1, "coreset_count": None, "projection_dim": 64, "seed": 0})
    return manifest


@pytest.fixture
def artifact_path(tmp_path):
    bank = np.arange(12, dtype=np.float16).reshape(3, 4)
    return write_artifact(tmp_path / "m.edgead", minimal_manifest(), {"bank.npy": npy_bytes(bank), "weights.bin": b"\x00\x01"})


def rewrite(path, edit_manifest=None, replace=None, extra=None):
    """Copy the zip with an edited manifest or member bytes, keeping the recorded hashes."""
    with zipfile.ZipFile(path) as src:
        entries = {name: src.read(name) for name in src.namelist()}
    manifest = json.loads(entries[MANIFEST])
    if edit_manifest:
        edit_manifest(manifest)
    entries[MANIFEST] = json.dumps(manifest).encode()
    entries.update(replace or {})
    entries.update(extra or {})
    with zipfile.ZipFile(path, "w") as dst:
        for name, data in entries.items():
            dst.writestr(name, data)


def test_round_trip(artifact_path):
    art = read_artifact(artifact_path)
    assert art.manifest["memory_bank"]["count"] == 3
    np.testing.assert_array_equal(art.load_npy("bank.npy"), np.arange(12, dtype=np.float16).reshape(3, 4))
    assert art.member("weights.bin") == b"\x00\x01"
    assert set(art.manifest["members"]) == {"bank.npy", "weights.bin"}


def test_corrupted_member_is_named(artifact_path):
    rewrite(artifact_path, replace={"weights.bin": b"\x00\x02"})
    with pytest.raises(ArtifactError, match="weights.bin.*corrupt"):
        read_artifact(artifact_path)


def test_missing_member_is_named(artifact_path):
    with zipfile.ZipFile(artifact_path) as src:
        entries = {n: src.read(n) for n in src.namelist() if n != "bank.npy"}
    with zipfile.ZipFile(artifact_path, "w") as dst:
        for name, data in entries.items():
            dst.writestr(name, data)
    with pytest.raises(ArtifactError, match="bank.npy.*missing"):
        read_artifact(artifact_path)


def test_wrong_version(artifact_path):
    rewrite(artifact_path, edit_manifest=lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ArtifactError, match="newer edgead"):
        read_artifact(artifact_path)


def test_missing_key_is_named(artifact_path):
    rewrite(artifact_path, edit_manifest=lambda m: m["postprocess"].pop("image_threshold"))
    with pytest.raises(ArtifactError, match="'postprocess.image_threshold' is missing"):
        read_artifact(artifact_path)


def test_head_section_key_is_named_when_the_head_opens(artifact_path):
    from edgead.runtime.heads import open_head

    rewrite(artifact_path, edit_manifest=lambda m: m["memory_bank"].pop("k"))
    artifact = read_artifact(artifact_path)  # the head's own section is the head's to check
    with pytest.raises(ArtifactError, match="'memory_bank.k' is missing"):
        open_head(artifact)


def test_unknown_head_says_to_upgrade(artifact_path):
    from edgead.runtime.heads import open_head

    rewrite(artifact_path, edit_manifest=lambda m: m["head"].update(name="telepathy"))
    with pytest.raises(ArtifactError, match="'telepathy' is not part of this edgead.*upgrade"):
        open_head(read_artifact(artifact_path))


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda m: m.pop("graphs"), "'graphs'"),
        (lambda m: m["graphs"]["features"]["inputs"][0].update(dtype="float64"), "graphs.features.inputs.images.dtype"),
        (lambda m: m["graphs"]["features"]["outputs"][0].update(shape=[0, 4]), "graphs.features.outputs.features.shape"),
        (lambda m: m["graphs"]["features"]["outputs"][0].pop("name"), r"graphs.features.outputs\[0\].name"),
        (lambda m: m["head"].update(graph="decoder"), "head.graph"),
    ],
)
def test_bad_graph_or_head_is_named(artifact_path, edit, key):
    rewrite(artifact_path, edit_manifest=edit)
    with pytest.raises(ArtifactError, match=key):
        read_artifact(artifact_path)


def test_format1_manifest_is_upgraded_on_read(tmp_path):
    bank = np.arange(12, dtype=np.float16).reshape(3, 4)
    manifest = format1_manifest()
    manifest["engines"] = [{"backend": "onnxruntime", "precision": "fp32", "member": "e.onnx"}]
    path = tmp_path / "old.edgead"
    members = {"bank.npy": npy_bytes(bank), "weights.bin": b"", "e.onnx": b"onnx"}
    manifest["members"] = {name: {"sha256": __import__("hashlib").sha256(data).hexdigest()} for name, data in members.items()}
    with zipfile.ZipFile(path, "w") as archive:  # written as 0.1.0 wrote it, not through write_artifact
        archive.writestr(MANIFEST, json.dumps(manifest))
        for name, data in members.items():
            archive.writestr(name, data)
    art = read_artifact(path)
    assert art.manifest["format_version"] == FORMAT_VERSION and art.manifest["upgraded_from"] == 1
    assert art.manifest["head"] == {"name": "knn", "graph": "features", "output": "features"}
    assert art.manifest["graphs"]["features"]["inputs"] == [{"name": "images", "shape": ["batch", 64, 64, 3], "dtype": "uint8"}]
    assert art.manifest["graphs"]["features"]["outputs"] == [{"name": "features", "shape": ["batch", 4, 8, 8], "dtype": "float32"}]
    assert art.engine("onnxruntime", "fp32", graph="features")["member"] == "e.onnx"
    assert art.manifest["memory_bank"]["coreset"] == {"fraction": 0.1, "count": None, "projection_dim": 64, "seed": 0}


def test_format1_missing_bank_key_is_named(tmp_path):
    manifest = format1_manifest()
    manifest["memory_bank"].pop("k")
    with pytest.raises(ArtifactError, match="'memory_bank.k' is missing"):
        write_artifact(tmp_path / "m.edgead", manifest, {"bank.npy": b"", "weights.bin": b""})


def test_member_named_anywhere_must_be_listed(tmp_path):
    manifest = minimal_manifest()
    manifest["svm"] = {"support_vectors": {"member": "sv.npy"}}
    with pytest.raises(ArtifactError, match="names member 'sv.npy'"):
        write_artifact(tmp_path / "m.edgead", manifest, {"bank.npy": b"", "weights.bin": b""})


def test_wrong_type_is_named(artifact_path):
    rewrite(artifact_path, edit_manifest=lambda m: m["input"].update(size_px="256"))
    with pytest.raises(ArtifactError, match="input.size_px"):
        read_artifact(artifact_path)


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "a/../../evil", "a\\..\\evil"])
def test_escaping_zip_entry_is_refused(artifact_path, name):
    rewrite(artifact_path, extra={name: b"x"})
    with pytest.raises(ArtifactError, match="escape"):
        read_artifact(artifact_path)


def test_escaping_member_name_refused_on_write(tmp_path):
    with pytest.raises(ArtifactError, match="escape"):
        write_artifact(tmp_path / "m.edgead", minimal_manifest(), {"../bank.npy": b"", "bank.npy": b"", "weights.bin": b""})


def test_not_a_zip(tmp_path):
    bad = tmp_path / "bad.edgead"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        read_artifact(bad)


def test_truncated_file(artifact_path):
    data = artifact_path.read_bytes()
    artifact_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError):
        read_artifact(artifact_path)


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="edgead train"):
        read_artifact(tmp_path / "nope.edgead")


def test_pickled_npy_is_refused(tmp_path):
    bank = np.array([{"a": 1}], dtype=object)
    import io

    buf = io.BytesIO()
    np.save(buf, bank, allow_pickle=True)
    path = write_artifact(tmp_path / "m.edgead", minimal_manifest(), {"bank.npy": buf.getvalue(), "weights.bin": b""})
    with pytest.raises(ArtifactError, match="plain .npy"):
        read_artifact(path).load_npy("bank.npy")


def test_failed_write_leaves_previous_file_intact(artifact_path, monkeypatch):
    before = artifact_path.read_bytes()
    import edgead.artifact as artifact_module

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifact_module.os, "fsync", full_disk)
    with pytest.raises(ArtifactError, match="nothing was changed"):
        write_artifact(artifact_path, minimal_manifest(), {"bank.npy": b"", "weights.bin": b""})
    assert artifact_path.read_bytes() == before
    assert [p.name for p in artifact_path.parent.iterdir()] == [artifact_path.name]


def test_unwritable_destination_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ArtifactError, match="cannot write.*--out"):
        write_artifact(blocker / "m.edgead", minimal_manifest(), {"bank.npy": b"", "weights.bin": b""})


def test_duplicate_entries_are_refused(artifact_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is told to write
        with zipfile.ZipFile(artifact_path, "a") as archive:
            archive.writestr("weights.bin", b"\x00\x01")
    with pytest.raises(ArtifactError, match="same entry twice"):
        read_artifact(artifact_path)


def test_member_size_must_match_the_manifest(artifact_path):
    rewrite(artifact_path, edit_manifest=lambda m: m["members"]["weights.bin"].update(bytes=3))
    with pytest.raises(ArtifactError, match="weights.bin.*has 2 bytes, the manifest says 3"):
        read_artifact(artifact_path)
