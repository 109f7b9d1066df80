"""What the TensorRT builder and backend share: the lazy import, versions, engine compatibility, the logger.

Engines belong to the TensorRT release that built them, and TensorRT 10 and 11 differ in what they can
build (11 only strongly typed networks) and read: an engine never crosses releases, least of all majors.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from edgead.errors import BackendError
from edgead.runtime import cuda

log = logging.getLogger("edgead.tensorrt")

def import_tensorrt() -> Any:
    return cuda.import_optional(("tensorrt",), "tensorrt")


def version_triple(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a TensorRT version string such as '10.3.0.30' or '10.0.1'."""
    match = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if match is None:
        raise BackendError(f"cannot read TensorRT version {version!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def tensorrt_major(version: str) -> int:
    """The major release of a TensorRT version string: 10 on JetPack 6, 11 from PyPI since 2026."""
    return version_triple(version)[0]


def check_engine_compat(entry: dict[str, Any], trt_version: str, compute_capability: str) -> None:
    """Refuse an engine built by another TensorRT release or for another GPU architecture.

    Serialised engines are tied to the TensorRT release that built them; we compare major.minor.patch
    (a differing build number inside one patch release is left to TensorRT's own check at deserialisation,
    whose messages we report). An engine of TensorRT 10 on 11, or back, gets its own message: the two
    majors build differently (11 only strongly typed networks). `compute_capability` is like 'sm_87'.
    """
    member, precision = entry.get("member", "the TensorRT engine"), entry.get("precision", "fp16")
    rebuild = f"rebuild it here with `edgead export --engine {precision}`"
    built_version, built_cc = entry.get("tensorrt_version"), entry.get("compute_capability")
    if not built_version or not built_cc:
        raise BackendError(f"{member} does not record the TensorRT version and GPU it was built for; {rebuild}")
    built_major, here_major = int(entry.get("tensorrt_major") or tensorrt_major(built_version)), tensorrt_major(trt_version)
    if built_major != here_major:
        raise BackendError(
            f"{member} was built with TensorRT {built_major} ({built_version}); this device has TensorRT {here_major} "
            f"({trt_version}), and engines do not cross TensorRT major versions — {rebuild}"
        )
    if version_triple(built_version) != version_triple(trt_version) or built_cc != compute_capability:
        raise BackendError(
            f"{member} was built for TensorRT {built_version} on {built_cc}; "
            f"this device has TensorRT {trt_version} on {compute_capability} — {rebuild}"
        )


class LogCapture:
    """TensorRT's warnings and errors: sent to logging, and collected by `capture()` blocks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: list[list[str]] = []

    def record(self, severity: str, message: str) -> None:
        (log.error if severity.endswith("error") else log.warning)("TensorRT %s: %s", severity, message)
        with self._lock:
            for sink in self._sinks:
                sink.append(f"{severity}: {message}")

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        """Yield a list that fills with the messages logged until the block ends."""
        sink: list[str] = []
        with self._lock:
            self._sinks.append(sink)
        try:
            yield sink
        finally:
            with self._lock:
                self._sinks = [s for s in self._sinks if s is not sink]


def describe_messages(messages: list[str], limit: int = 12) -> str:
    if not messages:
        return "TensorRT logged no warning or error"
    shown = messages[-limit:]
    return "TensorRT said:\n  " + "\n  ".join(shown) + (f"\n  (and {len(messages) - limit} earlier)" if len(messages) > limit else "")


def create_native(factory: Callable[[], Any], what: str, messages: list[str]) -> Any:
    """trt.Builder(logger) or trt.Runtime(logger); BackendError with TensorRT's messages when TensorRT makes none.

    The bindings raise TypeError ("factory function returned nullptr") when TensorRT cannot start, e.g. when
    CUDA cannot initialise; measured on the TensorRT 10.3 and 11.4 bindings.
    """
    try:
        return factory()
    except TypeError as exc:
        if "nullptr" not in str(exc):
            raise
        raise BackendError(f"TensorRT could not create {what}: does this machine's CUDA GPU work (`edgead doctor`)? {describe_messages(messages)}") from exc


_LOGGER: Any = None


def tensorrt_logger() -> Any:
    """The process-wide `CapturingLogger(trt.ILogger)`; one logger for every Builder and Runtime, as TensorRT expects."""
    global _LOGGER
    if _LOGGER is None:
        trt = import_tensorrt()
        kept = {
            trt.ILogger.Severity.INTERNAL_ERROR: "internal error",
            trt.ILogger.Severity.ERROR: "error",
            trt.ILogger.Severity.WARNING: "warning",
        }

        class CapturingLogger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)  # the binding's trampoline needs its base initialised explicitly
                self.records = LogCapture()

            def log(self, severity: Any, msg: str) -> None:
                name = kept.get(severity)
                if name is not None:
                    self.records.record(name, msg)

            def capture(self):
                return self.records.capture()

        _LOGGER = CapturingLogger()
    return _LOGGER
