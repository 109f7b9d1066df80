import subprocess
import sys

BLOCK_TORCH = "import sys; sys.modules['torch'] = None; "


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, timeout=120)


def test_runtime_imports_with_torch_blocked():
    done = run_blocked(
        "import edgead.runtime, edgead.runtime.predictor, edgead.runtime.evaluate, edgead.runtime.predict, "
        "edgead.runtime.backends.onnxrt, edgead.runtime.report, edgead.runtime.live, edgead.runtime.sinks, "
        "edgead.runtime.sources, edgead.runtime.scheduler, edgead.runtime.enroll, edgead.runtime.cuda, "
        "edgead.runtime.backends.tensorrt, edgead.cli; "
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]; print('ok')"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_blocking_really_blocks_torch():
    done = run_blocked("import torch")
    assert done.returncode != 0 and "torch" in done.stderr
