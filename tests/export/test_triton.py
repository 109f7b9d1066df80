"""`edgead export --format triton`: every config.pbtxt against the manifest, for PatchCore and vq-restore, each layout."""

import json
import shutil

import pytest
from click.testing import CliRunner

from edgead.artifact import read_artifact, sha256_bytes
from edgead.cli import main
from edgead.errors import ArtifactError
from edgead.export.triton import TritonOptions, write_triton_repository
from edgead.export.triton_check import check_repository
from edgead.graphs import graph_specs

text_format = pytest.importorskip("google.protobuf.text_format", reason="tritonclient[grpc] (the triton extra) is not installed")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (the triton extra) is not installed")

TYPE = {"uint8": "TYPE_UINT8", "int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def tensors(config, side):
    return [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in getattr(config, side)]


def manifest_tensors(spec, side):
    return [(t.name, TYPE[t.dtype], [int(d) for d in t.shape[1:]]) for t in getattr(spec, side)]


def export(model, out, *extra):
    return CliRunner().invoke(main, ["export", "--model", str(model), "--engine", "fp32", "--format", "triton", "--out", str(out), *extra])


@pytest.mark.parametrize("python_only", [False, True], ids=["engines", "python-only"])
@pytest.mark.parametrize("which", ["patchcore", "vq-restore", "small-ae"])
def test_every_config_matches_the_manifest(which, python_only, request, tmp_path):
    path = {"patchcore": lambda: request.getfixturevalue("tiny_trained")[1], "vq-restore": lambda: request.getfixturevalue("tiny_vq_model"),
            "small-ae": lambda: request.getfixturevalue("tiny_small_ae_model")}[which]()
    artifact = read_artifact(path)
    manifest = artifact.manifest
    specs = graph_specs(manifest)
    extra = ["--max-batch", "4", "--instances", "2", "--model-name", "m"] + (["--python-only"] if python_only else [])
    result = export(path, tmp_path / "repo", *extra)
    assert result.exit_code == 0, result.output
    repo = tmp_path / "repo"
    configs = {p.parent.name: parse(p) for p in repo.glob("*/config.pbtxt")}
    graphs = {f"m_{name}": spec for name, spec in specs.items()}
    if python_only:
        assert set(configs) == {"m"}
    elif which == "patchcore":
        assert set(configs) == {"m", "m_head", *graphs}
    else:
        assert set(configs) == {"m", *graphs}  # BLS: restoration calls encoder, prior and decoder itself; small-ae cuts patches
    for name, config in configs.items():
        assert config.name == name
        assert config.max_batch_size == 4
        if config.platform != "ensemble":
            assert config.HasField("dynamic_batching")
            assert [(g.count) for g in config.instance_group] == [2]
    for name, spec in ({} if python_only else graphs).items():
        config = configs[name]
        assert config.platform == "onnxruntime_onnx"
        assert tensors(config, "input") == manifest_tensors(spec, "inputs")
        assert tensors(config, "output") == manifest_tensors(spec, "outputs")
        engine = artifact.engine("onnxruntime", "fp32", graph=spec.name)
        assert sha256_bytes((repo / name / "1" / "model.onnx").read_bytes()) == manifest["members"][engine["member"]]["sha256"]
        accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert [a.name for a in accelerators] == ["tensorrt"] and accelerators[0].parameters["precision_mode"] == "FP32"
    top = configs["m"]
    size = manifest["input"].get("frame_px") or manifest["input"]["size_px"]  # small-ae: frames of frame_px, cut into patches
    assert tensors(top, "input") == [("FRAMES", "TYPE_UINT8", [size[0], size[1], 3])]
    assert tensors(top, "output") == [("SCORE", "TYPE_FP32", [1]), ("ANOMALOUS", "TYPE_BOOL", [1]), ("ANOMALY_MAP", "TYPE_FP32", list(size))]
    client = json.loads(top.parameters["edgead_client"].string_value)
    assert client["method"] == manifest["method"] and client["postprocess"] == manifest["postprocess"]
    if top.platform == "ensemble":
        first, second = top.ensemble_scheduling.step
        assert (first.model_name, dict(first.input_map)) == ("m_features", {"images": "FRAMES"})
        assert dict(second.input_map) == {"features": "features"} and second.model_name == "m_head"
        assert tensors(configs["m_head"], "input") == manifest_tensors(specs["features"], "outputs")
        assert (repo / "m" / "1").is_dir()
    else:
        assert top.backend == "python"
        assert (repo / "m" / "1" / "model.edgead").read_bytes() == path.read_bytes()
        assert "edgead.runtime.triton_python" in (repo / "m" / "1" / "model.py").read_text()


def test_a_config_that_differs_from_the_manifest_is_refused(tiny_trained, tmp_path):
    artifact = read_artifact(tiny_trained[1])
    repo = tmp_path / "repo"
    write_triton_repository(artifact, repo, TritonOptions(name="pc"))
    config = repo / "pc_features" / "config.pbtxt"
    original = config.read_text()
    config.write_text(original.replace("dims: [ 152,", "dims: [ 151,"))
    with pytest.raises(ArtifactError, match="differ from the manifest's graph 'features'"):
        check_repository(repo, artifact, "pc")
    config.write_text(original.replace("max_batch_size: 8", "max_batch_size: 8\nmax_batch_sise: 8"))
    with pytest.raises(ArtifactError, match="not a valid Triton model configuration"):
        check_repository(repo, artifact, "pc")
    config.write_text(original.replace('name: "features"', 'name: "feature"'))
    with pytest.raises(ArtifactError, match="'feature' is not a output of model.onnx"):  # the graph file itself disagrees
        from edgead.export import triton_check

        triton_check._check_onnx(repo / "pc_features" / "1" / "model.onnx", parse(config), config)
    config.write_text(original)
    (repo / "pc_features" / "1" / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="model.onnx is missing"):
        check_repository(repo, artifact, "pc")


def test_a_new_export_replaces_its_own_models_and_leaves_the_others(tiny_trained, tmp_path):
    repo = tmp_path / "repo"
    (repo / "other" / "1").mkdir(parents=True)
    (repo / "other" / "config.pbtxt").write_text('name: "other"\nbackend: "python"\n')
    assert export(tiny_trained[1], repo, "--model-name", "pc").exit_code == 0
    assert {p.name for p in repo.iterdir()} == {"other", "pc", "pc_features", "pc_head"}
    assert export(tiny_trained[1], repo, "--model-name", "pc", "--python-only").exit_code == 0
    assert {p.name for p in repo.iterdir()} == {"other", "pc"}


@pytest.mark.parametrize("args, message", [
    ([], "--format triton needs --out REPO"),
    (["--out", "{repo}", "--batch", "4"], "--batch do not apply to --format triton"),
    (["--out", "{repo}", "--engine", "fp16"], "has no fp16 ONNX engine of graph 'features'"),
    (["--out", "{repo}", "--model-name", "bad name"], "--model-name 'bad name'"),
    (["--out", "{file}"], "is a file; a Triton model repository is a folder"),
])
def test_bad_export_options_are_one_line_errors(tiny_trained, tmp_path, args, message):
    (tmp_path / "file").write_text("x")
    args = [a.format(repo=tmp_path / "repo", file=tmp_path / "file") for a in args]
    engine = [] if "--engine" in args else ["--engine", "fp32"]
    result = CliRunner().invoke(main, ["export", "--model", str(tiny_trained[1]), *engine, "--format", "triton", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_triton_options_without_format_triton_are_refused(tiny_trained, tmp_path):
    model = tmp_path / "m.edgead"
    shutil.copy(tiny_trained[1], model)
    result = CliRunner().invoke(main, ["export", "--model", str(model), "--engine", "fp32", "--format", "onnx", "--max-batch", "4"])
    assert result.exit_code == 2 and "--max-batch apply to --format triton only" in result.output


def test_no_dynamic_batching_leaves_the_batcher_out_of_every_model(tiny_trained, tmp_path):
    result = export(tiny_trained[1], tmp_path / "repo", "--model-name", "pc", "--no-dynamic-batching")
    assert result.exit_code == 0, result.output
    configs = [parse(p) for p in (tmp_path / "repo").glob("*/config.pbtxt")]
    assert len(configs) == 3 and not any(c.HasField("dynamic_batching") for c in configs)
    assert export(tiny_trained[1], tmp_path / "repo", "--model-name", "pc").exit_code == 0
    assert all(parse(p).HasField("dynamic_batching") for p in (tmp_path / "repo").glob("pc_*/config.pbtxt"))


def test_a_tensorrt_engine_is_served_as_a_plan_and_fp16_onnx_with_the_fp16_accelerator(tiny_trained, tmp_path):
    """Where the model holds a TensorRT engine of the precision, the graph model is that plan, on the GPU; else ONNX FP16."""
    from edgead.artifact import write_artifact

    artifact = read_artifact(tiny_trained[1])
    manifest = json.loads(json.dumps(artifact.manifest))
    onnx = artifact.engine("onnxruntime", "fp32", graph="features")
    manifest["engines"].append({**onnx, "precision": "fp16"})  # an FP16 ONNX entry (the bytes do not matter to the writer)
    members = dict(artifact.members)
    plan = {"backend": "tensorrt", "precision": "fp16", "graph": "features", "member": "engines/features.plan",
            "tensorrt_version": "10.3.0", "compute_capability": "8.7"}
    with_plan = tmp_path / "plan.edgead"
    write_artifact(with_plan, {**manifest, "engines": manifest["engines"] + [plan]}, {**members, "engines/features.plan": b"plan bytes"})
    result = export(with_plan, tmp_path / "repo", "--engine", "fp16", "--model-name", "pc")
    assert result.exit_code == 0, result.output
    assert "TensorRT 10.3.0 for sm_87" in result.output
    config = parse(tmp_path / "repo" / "pc_features" / "config.pbtxt")
    assert (config.platform, config.default_model_filename) == ("tensorrt_plan", "model.plan")
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"
    assert (tmp_path / "repo" / "pc_features" / "1" / "model.plan").read_bytes() == b"plan bytes"
    assert tensors(config, "output") == manifest_tensors(graph_specs(manifest)["features"], "outputs")
    without_plan = tmp_path / "fp16.edgead"
    write_artifact(without_plan, manifest, members)
    assert export(without_plan, tmp_path / "repo", "--engine", "fp16", "--model-name", "pc").exit_code == 0
    config = parse(tmp_path / "repo" / "pc_features" / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx" and not (tmp_path / "repo" / "pc_features" / "1" / "model.plan").exists()
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (accelerator.name, accelerator.parameters["precision_mode"]) == ("tensorrt", "FP16")
    assert export(without_plan, tmp_path / "repo", "--engine", "fp16", "--model-name", "pc", "--python-only").exit_code == 0
    top = parse(tmp_path / "repo" / "pc" / "config.pbtxt")
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(top.instance_group[0].kind) == "KIND_GPU"  # the FP16 graph is for CUDA


def test_export_to_a_folder_needs_format_triton(tiny_trained, tmp_path):
    result = CliRunner().invoke(main, ["export", "--model", str(tiny_trained[1]), "--engine", "fp32", "--format", "onnx", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder; give the model file to write" in result.output


def test_without_tritonclient_export_says_what_to_install_and_writes_nothing(tiny_trained, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # import fails as where the triton extra is missing
    result = export(tiny_trained[1], tmp_path / "repo")
    assert result.exit_code == 2 and "pip install 'edgead[triton]'" in result.output
    assert not (tmp_path / "repo").exists()
