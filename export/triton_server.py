"""A local Triton Inference Server on 127.0.0.1 from the `tritonserver` binary bundled in the `nvidia-pytriton` wheel.

For tests, benchmarks and a first try on a laptop: that build serves Python-backend models only (it has no
ONNX Runtime or TensorRT backend), so it serves `edgead export --format triton --python-only` repositories.
Two set-up facts make its Python backend work from a virtual environment: the backend stub is linked against
`libpython3.X.so`, which must be this interpreter's own (LD_LIBRARY_PATH gets its LIBDIR first; the system's
libpython of another build fails with `'_thread.RLock' object has no attribute '_recursion_count'`), and the
stub finds the venv's packages only with the venv's `bin` first on PATH.

    with LocalTritonServer(repository) as server:
        client = TritonClient(server.grpc_url, "brick")
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from edgead.errors import DependencyError, EdgeADError

HOST = "127.0.0.1"  # never another address: the server is for this machine only


def bundled_server() -> Path:
    """The folder of the tritonserver distribution inside the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("nvidia-pytriton is not installed (it bundles a tritonserver binary): pip install --no-deps nvidia-pytriton==0.7.0")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise DependencyError(f"{root} has no bin/tritonserver: reinstall nvidia-pytriton")
    return root


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class LocalTritonServer:
    """Starts tritonserver on 127.0.0.1 with `repository`, waits until it is ready; a context manager that stops it.

    `log_path`: the server's stdout and stderr (default: a file in its temporary folder, shown in errors).
    `startup_s`: how long to wait for readiness before the start counts as failed.
    """

    def __init__(self, repository: str | os.PathLike, startup_s: float = 60.0, log_path: str | os.PathLike | None = None) -> None:
        self.repository = Path(repository)
        self.startup_s = startup_s
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None
        self.grpc_port = self.http_port = 0

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def _backends(self, root: Path, folder: Path) -> Path:
        """A backend directory holding the Python backend with the stub built for this interpreter's version."""
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise DependencyError(f"nvidia-pytriton has no Python backend stub for Python {version} (it has {sorted(p.name for p in stub.parent.parent.iterdir() if p.is_dir())})")
        python = folder / "backends" / "python"
        python.mkdir(parents=True)
        for item in (root / "backends" / "python").iterdir():
            if item.is_file():
                (python / item.name).symlink_to(item)
        shutil.copy(stub, python / "triton_python_backend_stub")
        return folder / "backends"

    def environment(self, root: Path) -> dict[str, str]:
        env = dict(os.environ)
        libs = [sysconfig.get_config_var("LIBDIR") or "", str(root.parent.parent / "nvidia_pytriton.libs")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libs if p] + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("OMP_NUM_THREADS", "1")  # each model instance is one process; many threads each starve the others
        return env

    def start(self) -> LocalTritonServer:
        if not (self.repository / ".").is_dir():
            raise EdgeADError(f"model repository {self.repository} does not exist: write one with `edgead export --format triton --out DIR`")
        root = bundled_server()
        self._workdir = tempfile.TemporaryDirectory(prefix="edgead-triton-")
        folder = Path(self._workdir.name)
        backends = self._backends(root, folder)
        self.grpc_port, self.http_port = free_port(), free_port()
        log_path = self.log_path or folder / "server.log"
        self.log_path = log_path
        command = [
            str(root / "bin" / "tritonserver"), f"--model-repository={self.repository.resolve()}", f"--backend-directory={backends}",
            f"--grpc-address={HOST}", f"--grpc-port={self.grpc_port}", f"--http-address={HOST}", f"--http-port={self.http_port}",
            "--allow-metrics=false", "--exit-on-error=true", "--log-verbose=0", "--exit-timeout-secs=5",
        ]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.environment(root), cwd=folder)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.grpc_url)
        deadline = time.monotonic() + self.startup_s
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise EdgeADError(f"tritonserver exited with status {self.process.returncode} while starting: {self.log_tail()}")
                try:
                    if client.is_server_ready(client_timeout=2):
                        return
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.25)
        finally:
            client.close()
        raise EdgeADError(f"tritonserver was not ready after {self.startup_s:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 15 s) and remove its temporary folder; idempotent."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        if self._workdir is not None:
            if self.log_path and Path(self.log_path).parent == Path(self._workdir.name):
                self.log_path = None
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m edgead.export.triton_server REPO`: serve REPO on 127.0.0.1 until Ctrl-C (gRPC port printed)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m edgead.export.triton_server", description=main.__doc__)
    parser.add_argument("repository")
    parser.add_argument("--startup-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    try:
        with LocalTritonServer(args.repository, startup_s=args.startup_s) as server:
            print(f"serving {args.repository} on {server.grpc_url} (gRPC); log {server.log_path}; Ctrl-C stops", flush=True)
            while server.process.poll() is None:
                time.sleep(1.0)
            print(f"error: tritonserver exited with status {server.process.returncode}: {server.log_tail()}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        return 0
    except EdgeADError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
