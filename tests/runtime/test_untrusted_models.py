"""Issue 20's attacks on a model from a stranger, tried as an attacker would, each refused in one line with exit 2.

The TorchScript attack: a scripted engine whose forward writes a file; the attacker fixes up the hashes (the file
supplies its own) and breaks or drops the ONNX engine. The file it would write must never appear.
"""

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgead.artifact import MANIFEST, SIGNATURE, read_artifact
from edgead.cli import main
from edgead.errors import ArtifactError, BackendError
from edgead.runtime.backends.base import open_backend
from edgead.runtime.predictor import Predictor

TS = "engines/features.fp32.ts"
ONNX = "engines/features.fp32.onnx"


class WritesAFile(torch.nn.Module):
    """The attacker's engine: the model's own features, and on the side a file written wherever it likes."""

    def __init__(self, inner: torch.nn.Module, path: str) -> None:
        super().__init__()
        self.inner = inner
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.from_file(self.path, shared=True, size=8, dtype=torch.uint8)
        t.fill_(65)
        return self.inner(x) + t.sum() * 0


def tamper(source: Path, out: Path, replace=None, drop=(), keep_signature=True) -> Path:
    """Copy a model with members replaced or dropped, and the manifest's hashes fixed up to match, as an attacker would."""
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(entries.pop(MANIFEST))
    signature = entries.pop(SIGNATURE, None)
    entries.update(replace or {})
    for name in drop:
        entries.pop(name)
        manifest["engines"] = [e for e in manifest["engines"] if e["member"] != name]
    manifest["members"] = {n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in entries.items()}
    for engine in manifest["engines"]:
        engine["sha256"] = manifest["members"][engine["member"]]["sha256"]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        if signature is not None and keep_signature:
            archive.writestr(SIGNATURE, signature)
        for name, data in entries.items():
            archive.writestr(name, data)
    return out


def evil_engine(model: Path, target: Path) -> bytes:
    with zipfile.ZipFile(model) as archive:
        inner = torch.jit.load(io.BytesIO(archive.read(TS)))
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(WritesAFile(inner, str(target))), buffer)
    return buffer.getvalue()


def onnx_with_external_data(model: Path, location: str) -> bytes:
    """The model's ONNX engine with its largest initializer moved to 'external data' at `location`."""
    import onnx

    with zipfile.ZipFile(model) as archive:
        graph = onnx.load_from_string(archive.read(ONNX))
    tensor = max(graph.graph.initializer, key=lambda t: len(t.raw_data))
    length = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return graph.SerializeToString()


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def victim(tmp_path):
    return tmp_path / "pwned"


def test_own_model_predicts_by_default_with_onnx_runtime_and_says_so(tiny_trained, tiny_data_root, tmp_path):
    result = cli("predict", "--model", tiny_trained[1], tiny_data_root / "test" / "good", "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    assert "backend onnxruntime (fp32, cpu" in result.output


def test_torchscript_attack_with_the_onnx_engine_dropped_is_refused(tiny_trained, tiny_data_root, tmp_path, victim):
    evil = tamper(tiny_trained[1], tmp_path / "evil.edgead", replace={TS: evil_engine(tiny_trained[1], victim)}, drop=[ONNX])
    result = cli("predict", "--model", evil, tiny_data_root / "test" / "good", "--out", tmp_path / "out", "-q")
    line = one_line_error(result)
    assert "no backend can run this model" in line and "torchscript: left out" in line and "--trust-torchscript" in line
    named = cli("predict", "--model", evil, tiny_data_root / "test" / "good", "--out", tmp_path / "out", "--backend", "torchscript")
    assert f"{TS} not loaded" in one_line_error(named)
    for command in (["eval", tiny_data_root], ["bench", "--iterations", 1], ["enroll", tiny_data_root / "train" / "good"],
                    ["run", "--images", tiny_data_root / "test" / "good", "--headless"]):
        assert "--trust-torchscript" in one_line_error(cli(*command, "--model", evil))
    assert not victim.exists()


def test_the_trust_flag_is_what_lets_torchscript_run(tiny_trained, tiny_data_root, tmp_path, victim):
    """The same file with --trust-torchscript does run its code: trust is the user's decision, and it is needed."""
    evil = tamper(tiny_trained[1], tmp_path / "evil.edgead", replace={TS: evil_engine(tiny_trained[1], victim)}, drop=[ONNX])
    result = cli("predict", "--model", evil, tiny_data_root / "test" / "good", "--out", tmp_path / "out", "-q", "--trust-torchscript")
    assert result.exit_code == 0, result.output
    assert victim.read_bytes() == b"A" * 8


@pytest.mark.parametrize("location", ["/etc/passwd", "../x"])
def test_a_broken_onnx_engine_is_an_error_not_a_fallback(tiny_trained, tiny_data_root, tmp_path, victim, location):
    evil = tamper(tiny_trained[1], tmp_path / "evil.edgead",
                  replace={TS: evil_engine(tiny_trained[1], victim), ONNX: onnx_with_external_data(tiny_trained[1], location)})
    for trust in ([], ["--trust-torchscript"]):  # trusted or not, a failing engine stops the ladder
        result = cli("predict", "--model", evil, tiny_data_root / "test" / "good", "--out", tmp_path / "out", "-q", *trust)
        line = one_line_error(result)
        assert f"onnxruntime could not load {ONNX}" in line and "rather than try another" in line
    assert not victim.exists()


def test_onnx_external_data_is_not_read_from_the_working_directory(tiny_trained, tiny_data_root, tmp_path, monkeypatch):
    """A graph naming a file beside the user's working directory as its weights is refused, not fed that file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(b"\x00" * (1 << 22))
    evil = tamper(tiny_trained[1], tmp_path / "evil.edgead", replace={ONNX: onnx_with_external_data(tiny_trained[1], "secret.bin")})
    line = one_line_error(cli("predict", "--model", evil, tiny_data_root / "test" / "good", "--out", tmp_path / "out"))
    assert f"onnxruntime could not load {ONNX}" in line and "External data path" in line


def test_the_ladder_passes_only_absent_backends(tiny_trained, tmp_path, victim):
    evil = tamper(tiny_trained[1], tmp_path / "evil.edgead", replace={ONNX: b"not an onnx graph"})
    artifact = read_artifact(evil)
    with pytest.raises(BackendError, match=f"onnxruntime could not load {ONNX}"):
        open_backend(artifact, trust_code=True)
    with pytest.raises(BackendError, match="not loaded: a TorchScript engine is a program"):
        Predictor(read_artifact(tiny_trained[1]), backend="torchscript")
    with Predictor(read_artifact(tiny_trained[1]), backend="torchscript", trust_code=True) as trusted:
        assert trusted.backend.name == "torchscript"


def test_torchscript_backend_refuses_an_untrusted_model_on_its_own(tiny_trained):
    from edgead.runtime.backends.torchscript import TorchScriptBackend

    artifact = read_artifact(tiny_trained[1])
    with pytest.raises(BackendError, match="opened only for a trusted model"):
        TorchScriptBackend(artifact, artifact.engine("torchscript", "fp32"), "cpu")


def test_a_3_gb_member_is_refused_before_reading(tiny_trained, tiny_data_root, tmp_path):
    """The members' sum is capped; a model larger than the cap is refused from its directory, in one line."""
    result = cli("predict", "--model", tiny_trained[1], tiny_data_root / "test" / "good", "--out", tmp_path / "out", "--max-model-mb", 1)
    line = one_line_error(result)
    assert "over the limit of 1.0 MiB" in line and "--max-model-mb" in line


def test_a_hostile_npy_header_is_refused_in_one_line(tiny_trained, tiny_data_root, tmp_path):
    header = b"{'descr': '<f2', 'fortran_order': False, 'shape': (1000000000000, 152), }"
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    bank = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 64
    name = read_artifact(tiny_trained[1]).manifest["memory_bank"]["member"]
    evil = tamper(tiny_trained[1], tmp_path / "evil.edgead", replace={name: bank})
    line = one_line_error(cli("predict", "--model", evil, tiny_data_root / "test" / "good", "--out", tmp_path / "out"))
    assert "claims shape (1000000000000, 152) of float16 (304,000,000,000,000 bytes) but holds 64 bytes" in line


def test_memory_error_is_one_line(tiny_trained, tiny_data_root, tmp_path, monkeypatch):
    import edgead.runtime.predict as predict_module

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(predict_module, "predict_to_folder", no_memory)
    line = one_line_error(cli("predict", "--model", tiny_trained[1], tiny_data_root / "test" / "good", "--out", tmp_path / "out"))
    assert line.startswith("error: out of memory")


def test_signed_models_are_verified_both_ways(tiny_trained, tiny_data_root, tmp_path, victim):
    own, other = tmp_path / "plant.key", tmp_path / "other.key"
    assert cli("keygen", own).exit_code == 0 and cli("keygen", other).exit_code == 0
    assert oct(own.stat().st_mode & 0o777) == "0o600"
    model = tmp_path / "signed.edgead"
    signed = cli("sign", "--key", own, tiny_trained[1], "--out", model)
    assert signed.exit_code == 0, signed.output
    good = tiny_data_root / "test" / "good"
    pub = f"{own}.pub"
    assert "signed by key" in cli("verify", "--key", pub, model).output
    # signed by the key the user configured: accepted, and trusted to run its TorchScript engine
    result = cli("predict", "--model", model, good, "--out", tmp_path / "a", "-q", "--verify-key", pub, "--backend", "torchscript")
    assert result.exit_code == 0, result.output
    assert "is signed by key" in result.output
    # the same through the environment, as a plant's service file would set it
    env = CliRunner().invoke(main, ["predict", "--model", str(model), str(good), "--out", str(tmp_path / "b"), "-q"], env={"EDGEAD_VERIFY_KEY": pub})
    assert env.exit_code == 0, env.output
    # another key, no signature, a model changed after signing: refused, nothing run
    assert "not by" in one_line_error(cli("predict", "--model", model, good, "--out", tmp_path / "c", "--verify-key", f"{other}.pub"))
    assert "is not signed" in one_line_error(cli("predict", "--model", tiny_trained[1], good, "--out", tmp_path / "d", "--verify-key", pub))
    evil = tamper(model, tmp_path / "evil.edgead", replace={TS: evil_engine(model, victim)})
    line = one_line_error(cli("predict", "--model", evil, good, "--out", tmp_path / "e", "--verify-key", pub, "--backend", "torchscript"))
    assert "does not match the manifest" in line
    assert "does not match" in one_line_error(cli("verify", "--key", pub, evil))
    assert not victim.exists()
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        read_artifact(evil, verify_key=pub)
    # a private key where the public one belongs, and keygen over an existing key, are one-line errors
    assert "that is the private key" in one_line_error(cli("verify", "--key", own, model))
    assert "--force" in one_line_error(cli("keygen", own))


def test_a_member_swapped_under_a_kept_signature_is_caught_by_its_hash(tiny_trained, tmp_path):
    """Replacing a member but keeping the signed manifest (hashes not fixed up) fails the member's sha256."""
    key = tmp_path / "k"
    cli("keygen", key)
    model = tmp_path / "signed.edgead"
    cli("sign", "--key", key, tiny_trained[1], "--out", model)
    with zipfile.ZipFile(model) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries[ONNX] = b"x" * len(entries[ONNX])
    with zipfile.ZipFile(tmp_path / "swapped.edgead", "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        read_artifact(tmp_path / "swapped.edgead", verify_key=f"{key}.pub")


@pytest.mark.parametrize("command", [["export", "--engine", "fp32", "--model"], ["sign", "--key", "unused.key"], ["verify", "--key", "unused.pub"]])
def test_every_command_that_reads_a_model_takes_the_size_cap(tiny_trained, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "unused.key").write_text("x")
    if command[0] == "sign":  # a real key, so that the cap is what refuses
        cli("keygen", tmp_path / "unused.key", "--force")
    if command[0] == "verify":
        cli("keygen", tmp_path / "unused", "--force")
    line = one_line_error(cli(*command, tiny_trained[1], "--max-model-mb", 1))
    assert "over the limit of 1.0 MiB" in line


@pytest.mark.parametrize("how", ["truncated-10", "truncated-90", "flipped", "zeros", "empty"])
def test_a_corrupt_onnx_engine_with_fixed_hashes_is_one_line(tiny_trained, tiny_data_root, tmp_path, how):
    import numpy as np

    with zipfile.ZipFile(tiny_trained[1]) as archive:
        graph = bytearray(archive.read(ONNX))
    if how.startswith("truncated"):
        graph = graph[: len(graph) * int(how.split("-")[1]) // 100]
    elif how == "flipped":
        for position in np.random.default_rng(0).integers(0, len(graph), 64):
            graph[position] ^= 0xFF
    elif how == "zeros":
        graph = bytearray(len(graph))
    else:
        graph = bytearray()
    evil = tamper(tiny_trained[1], tmp_path / "evil.edgead", replace={ONNX: bytes(graph)})
    result = cli("predict", "--model", evil, tiny_data_root / "test" / "good", "--out", tmp_path / "out", "-q")
    if result.exit_code == 0:  # a flip the graph survives: it scored, through ONNX Runtime
        assert "backend onnxruntime (" in result.output
    else:
        assert ONNX in one_line_error(result)


def test_signing_in_place_and_again(tiny_trained, tmp_path):
    import shutil

    key = tmp_path / "k"
    cli("keygen", key)
    model = shutil.copy(tiny_trained[1], tmp_path / "m.edgead")
    for _ in range(2):  # signing a signed model replaces its signature
        assert cli("sign", "--key", key, model).exit_code == 0
    artifact = read_artifact(model, verify_key=f"{key}.pub")
    assert artifact.signed_by and set(artifact.members) == set(read_artifact(tiny_trained[1]).members)
    with zipfile.ZipFile(model) as archive:
        assert sorted(archive.namelist()).count(SIGNATURE) == 1
