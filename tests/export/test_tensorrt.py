"""TensorRT export and backend: pure parts everywhere; real engines behind the `tensorrt` marker."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgead.artifact import Artifact, sha256_bytes
from edgead.errors import BackendError, ConfigError, DataError
from edgead.export.tensorrt import _check_arguments, _load_cached, _write_atomic, build_engine, engine_cache_key, tensorrt_available
from edgead.runtime.backends.tensorrt import LogCapture, check_engine_compat, describe_messages, version_triple

KEY_ARGS = dict(
    onnx_sha256="ab" * 32,
    precision="int8",
    batch_profile=(1, 8, 16),
    input_hw=(224, 224),
    tensorrt_version="10.3.0",
    compute_capability="sm_87",
    calibration_sha256="cd" * 32,
)


def test_engine_cache_key_is_stable_and_changes_with_every_component():
    key = engine_cache_key(**KEY_ARGS)
    assert key == engine_cache_key(**KEY_ARGS) and len(key) == 64
    changed = dict(
        onnx_sha256="ef" * 32,
        precision="fp16",
        batch_profile=(1, 4, 16),
        input_hw=(256, 224),
        tensorrt_version="10.3.1",
        compute_capability="sm_86",
        calibration_sha256="00" * 32,
    )
    for name, value in changed.items():
        assert engine_cache_key(**{**KEY_ARGS, name: value}) != key, name


def test_calibration_data_only_matters_for_int8():
    fp16 = {**KEY_ARGS, "precision": "fp16"}
    assert engine_cache_key(**fp16) == engine_cache_key(**{**fp16, "calibration_sha256": None})


ENTRY = {"member": "engines/features.fp16.plan", "precision": "fp16", "tensorrt_version": "10.3.0", "compute_capability": "sm_87"}


def test_matching_engine_is_accepted_whatever_the_build_number():
    check_engine_compat(ENTRY, "10.3.0", "sm_87")
    check_engine_compat(ENTRY, "10.3.0.30", "sm_87")
    assert version_triple("10.0.1") == (10, 0, 1) and version_triple("10.3") == (10, 3, 0)


@pytest.mark.parametrize("version, gpu", [("10.0.1", "sm_87"), ("10.3.0", "sm_86"), ("10.0.1", "sm_86"), ("10.3.1", "sm_87")])
def test_other_tensorrt_or_gpu_is_refused_with_the_rebuild_command(version, gpu):
    with pytest.raises(BackendError) as info:
        check_engine_compat(ENTRY, version, gpu)
    assert str(info.value) == (
        f"engines/features.fp16.plan was built for TensorRT 10.3.0 on sm_87; this device has TensorRT {version} "
        f"on {gpu} — rebuild it here with `edgead export --engine fp16`"
    )


def test_engine_without_build_record_is_refused():
    with pytest.raises(BackendError, match="does not record"):
        check_engine_compat({"member": "engines/x.plan", "precision": "int8"}, "10.3.0", "sm_87")


def test_log_capture_collects_only_inside_the_block():
    records = LogCapture()
    records.record("warning", "before")
    with records.capture() as outer:
        records.record("error", "one")
        with records.capture() as inner:
            records.record("warning", "two")
    records.record("error", "after")
    assert outer == ["error: one", "warning: two"] and inner == ["warning: two"]
    assert "error: one" in describe_messages(outer) and "no warning" in describe_messages([])


def test_arguments_are_checked_before_tensorrt_is_needed(tmp_path):
    good = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match="INT8 needs calibration images"):
        build_engine(b"onnx", "int8", (32, 32))
    with pytest.raises(ConfigError, match="INT8 needs calibration images"):
        build_engine(b"onnx", "int8", (32, 32), calibration_cache=tmp_path / "missing.cache")
    with pytest.raises(ConfigError, match="precision"):
        build_engine(b"onnx", "int4", (32, 32))
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        build_engine(b"onnx", "fp16", (32, 32), batch_profile=(4, 2, 8))
    with pytest.raises(ConfigError, match="uint8"):
        build_engine(b"onnx", "int8", (32, 32), calibration_images=good.astype(np.float32))
    with pytest.raises(ConfigError, match="at least 2"):
        build_engine(b"onnx", "int8", (32, 32), batch_profile=(2, 4, 8), calibration_images=good[:1])
    cache = tmp_path / "calibration.cache"
    cache.write_bytes(b"scales")
    _check_arguments("int8", (32, 32), (1, 8, 16), 1024, None, cache, "calibrator")  # an existing cache is enough for the calibrator
    with pytest.raises(ConfigError, match="INT8 needs calibration images"):
        _check_arguments("int8", (32, 32), (1, 8, 16), 1024, None, cache)  # but not for the Q/DQ graph
    _check_arguments("int8", (32, 32), (1, 8, 16), 1024, good, None)


def test_engine_cache_files_are_checked_on_read(tmp_path):
    plan, meta = tmp_path / "k.plan", tmp_path / "k.json"
    assert _load_cached(plan, meta) is None
    _write_atomic(plan, b"engine bytes")
    _write_atomic(meta, json.dumps({"sha256": sha256_bytes(b"engine bytes"), "precision": "fp16", "build_s": 3.0}).encode())
    hit = _load_cached(plan, meta)
    assert hit.data == b"engine bytes" and hit.info["cache_hit"] is True and hit.info["build_s"] == 0.0
    plan.write_bytes(b"torn")
    assert _load_cached(plan, meta) is None
    meta.write_text("{not json")
    assert _load_cached(plan, meta) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.json", "k.plan"]  # no temporary files left


BLOCK = "import sys\nfor name in ('tensorrt', 'cuda', 'cuda.bindings', 'cuda.bindings.runtime', 'cuda.cudart'):\n    sys.modules[name] = None\n"

WITHOUT_TENSORRT = """
from pathlib import Path
from edgead.artifact import Artifact
from edgead.errors import BackendError, DependencyError
import edgead.runtime.cuda as cuda
import edgead.runtime.backends.tensorrt as backend
import edgead.export.tensorrt as export
from edgead.runtime.backends.base import open_backend

hint = "pip install 'edgead[tensorrt]'"
assert hint in export.tensorrt_available()
entry = {"graph": "features", "backend": "tensorrt", "precision": "fp16", "member": "engines/features.fp16.plan"}
artifact = Artifact(Path("m.edgead"), {"engines": [entry]}, {entry["member"]: b"plan"})
for use in (cuda.device_count, lambda: cuda.Stream(), lambda: export.build_engine(b"onnx", "fp16", (32, 32)),
            lambda: backend.TensorRTBackend(artifact, entry, "cuda"), backend.tensorrt_logger):
    try:
        use()
    except DependencyError as exc:
        assert hint in str(exc) and "JetPack" in str(exc), exc
    else:
        raise AssertionError(f"{use} worked without tensorrt")
try:
    open_backend(artifact, "tensorrt", "cuda")
except BackendError as exc:
    assert "tensorrt:" in str(exc) and hint in str(exc), exc
print("ok")
"""


def test_modules_import_without_tensorrt_and_fail_on_use_with_the_install_hint():
    done = subprocess.run([sys.executable, "-c", BLOCK + WITHOUT_TENSORRT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# ---------------------------------------------------------------- real engines (TensorRT + GPU)

TRT_REASON = tensorrt_available()


def needs_tensorrt(test):
    return pytest.mark.tensorrt(pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT unavailable: {TRT_REASON}")(test))


SIZE = (32, 32)
PROFILE = (1, 2, 4)


@pytest.fixture(scope="module")
def tiny_onnx():
    """A small graph shaped like ours: uint8 (N, 32, 32, 3) in, float (N, 16, 8, 8) features out."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from edgead.export.onnx import export_onnx

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
            )
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

        def forward(self, images):
            x = images.float().permute(0, 3, 1, 2) / 255.0  # TensorRT wants the uint8 input to feed a Cast directly
            return self.body((x - self.mean) / self.std)

    torch.manual_seed(0)
    return export_onnx(Tiny().eval(), SIZE)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, (7, *SIZE, 3), dtype=np.uint8)


def reference(onnx_bytes, images):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def artifact_with(built):
    precision = built.info["precision"]
    entry = {"backend": "tensorrt", "precision": precision, "member": f"engines/features.{precision}.plan", **built.info}
    return Artifact(Path("<memory>"), {"engines": [entry]}, {entry["member"]: built.data}), entry


def run_engine(built, images):
    from edgead.runtime.backends.tensorrt import TensorRTBackend

    artifact, entry = artifact_with(built)
    with TensorRTBackend(artifact, entry, "cuda") as backend:
        return backend.infer(images)


def relative_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


@needs_tensorrt
@pytest.mark.parametrize("precision, tolerance", [("fp32", 5e-3), ("fp16", 2e-2)])  # fp32 allows TF32 convolutions
def test_engine_matches_onnx_runtime(tiny_onnx, images, tmp_path, precision, tolerance):
    built = build_engine(tiny_onnx, precision, SIZE, PROFILE, timing_cache=tmp_path / "timing.cache")
    assert built.info["precision"] == precision and built.info["compute_capability"].startswith("sm_")
    assert built.info["output_shapes"] == {"features": ["batch", 16, 8, 8]}
    got = run_engine(built, images)  # 7 images: chunks of 4 and 3
    assert got.dtype == np.float32 and got.shape == (7, 16, 8, 8)
    assert relative_error(got, reference(tiny_onnx, images)) < tolerance
    assert (tmp_path / "timing.cache").stat().st_size > 0


def tensorrt_major_here():
    from edgead.runtime.backends.tensorrt import import_tensorrt, tensorrt_major

    return tensorrt_major(import_tensorrt().__version__)


@needs_tensorrt
def test_int8_from_the_qdq_graph(tiny_onnx, images):
    calibration = np.random.default_rng(2).integers(0, 256, (16, *SIZE, 3), dtype=np.uint8)
    built = build_engine(tiny_onnx, "int8", SIZE, PROFILE, calibration_images=calibration)
    assert built.info["build_plan"]["graph"] == "int8-qdq" and built.info["build_plan"]["strongly_typed"]
    assert relative_error(run_engine(built, images), reference(tiny_onnx, images)) < 0.15


@needs_tensorrt
def test_int8_calibrates_then_reuses_its_cache(tiny_onnx, images, tmp_path):
    if tensorrt_major_here() >= 11:
        pytest.skip("TensorRT 11 removed the INT8 calibrators")
    calibration = np.random.default_rng(2).integers(0, 256, (16, *SIZE, 3), dtype=np.uint8)
    cache = tmp_path / "calibration.cache"
    built = build_engine(tiny_onnx, "int8", SIZE, PROFILE, calibration_images=calibration, calibration_cache=cache, int8_mode="calibrator")
    assert cache.stat().st_size > 0 and built.info["calibration"] == {"images": 16, "batch": 2}
    want = reference(tiny_onnx, images)
    assert relative_error(run_engine(built, images), want) < 0.15
    again = build_engine(tiny_onnx, "int8", SIZE, PROFILE, calibration_cache=cache, int8_mode="calibrator")
    assert relative_error(run_engine(again, images), want) < 0.15


@needs_tensorrt
def test_engine_cache_hit_on_rebuild(tiny_onnx, tmp_path):
    first = build_engine(tiny_onnx, "fp16", SIZE, PROFILE, engine_cache_dir=tmp_path)
    second = build_engine(tiny_onnx, "fp16", SIZE, PROFILE, engine_cache_dir=tmp_path)
    assert not first.info["cache_hit"] and second.info["cache_hit"]
    assert second.data == first.data and (tmp_path / f"{first.info['cache_key']}.plan").is_file()
    other = build_engine(tiny_onnx, "fp16", SIZE, (1, 2, 8), engine_cache_dir=tmp_path)
    assert not other.info["cache_hit"]


@needs_tensorrt
def test_engine_from_another_tensorrt_is_refused(tiny_onnx):
    from edgead.runtime.backends.tensorrt import TensorRTBackend

    artifact, entry = artifact_with(build_engine(tiny_onnx, "fp16", SIZE, PROFILE))
    entry["tensorrt_version"] = "9.9.9"
    with pytest.raises(BackendError, match=r"built for TensorRT 9\.9\.9 .* rebuild it here with `edgead export --engine fp16`"):
        TensorRTBackend(artifact, entry, "cuda")


@needs_tensorrt
def test_slots_run_side_by_side_and_bad_input_is_refused(tiny_onnx, images):
    from edgead.runtime.backends.tensorrt import TensorRTEngine, TensorRTSlot

    built = build_engine(tiny_onnx, "fp32", SIZE, PROFILE)
    engine = TensorRTEngine(built.data)
    assert engine.batch_range == PROFILE and engine.image_shape == (*SIZE, 3)
    with TensorRTSlot(engine) as first, TensorRTSlot(engine) as second:
        first.submit(images[:4])
        second.submit(images[4:])
        together = np.concatenate([first.wait(), second.wait()])
        assert first.ready() and second.gpu_ms() >= 0.0
        with pytest.raises(DataError):
            first.submit(images[:5])  # more than the profile's max batch
    engine.close()
    assert relative_error(together, run_engine(built, images)) < 1e-6
    with pytest.raises(DataError, match="images"):
        run_engine(built, images[:, :16])
