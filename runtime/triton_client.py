"""Scoring frames on a Triton Inference Server that serves an `edgead export --format triton` repository.

    with TritonPredictor("127.0.0.1:8001", "brick") as predictor:
        predictions = predictor.predict([frame])           # as Predictor.predict: score, verdict, map

The client reads what it needs from the served model's config (`edgead_client`: frame and map size, the
threshold and calibration of the served engine), resizes frames to the frame size as the in-process
Predictor does, and sends them over gRPC. A server that is down, a model it does not serve and a request it
refuses are one-line errors (BackendError) that say what to do. `TritonPredictor` has the Predictor's
staged interface (prepare, infer, head, maps), so `edgead run` drives it unchanged: sources, sinks,
events and drift as in process; the "inference" stage is the round trip to the server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgead.errors import BackendError, ConfigError, DataError
from edgead.runtime.backends.base import require
from edgead.runtime.calibration import choose_threshold
from edgead.runtime.predictor import Prediction
from edgead.runtime.preprocess import check_rgb, resize_to_input

RESULTS = ("SCORE", "ANOMALOUS", "ANOMALY_MAP")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def check_url(url: str) -> str:
    """HOST:PORT of a gRPC endpoint, checked: no scheme, a port from 1 to 65535."""
    host, _, port = url.rpartition(":")
    if "://" in url or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"--triton {url!r}: give HOST:PORT of the server's gRPC port, without a scheme, e.g. 127.0.0.1:8001")
    return url


class TritonClient:
    """A gRPC connection to one edgead model on a Triton server; `infer` sends a ready batch as it is."""

    def __init__(self, url: str, model: str, timeout_s: float = 30.0) -> None:
        grpc = require("tritonclient.grpc", "triton")
        self._grpc = grpc
        self.url, self.model, self.timeout_s = check_url(url), model, timeout_s
        try:
            self.client = grpc.InferenceServerClient(url)
        except Exception as exc:  # noqa: BLE001 - tritonclient raises its own types for a bad URL
            raise BackendError(f"--triton {url!r} is not a server address ({one_line(exc)}); give HOST:PORT of Triton's gRPC port, e.g. 127.0.0.1:8001") from None
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    def _call(self, what: str, fn, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            text = one_line(exc.message() or exc)
            lowered = text.lower()
            if "deadline" in lowered or "timed out" in lowered:
                raise BackendError(f"the Triton server at {self.url} did not answer {what} within {self.timeout_s:g} s ({text}): "
                                   "is it overloaded, or still building an engine? Check its log") from None
            if "resolving" in lowered or "lookup" in lowered:
                raise BackendError(f"cannot find the host of --triton {self.url} ({text}): check the name, or give an IP address") from None
            if "unavailable" in lowered or "failed to connect" in lowered:
                raise BackendError(f"no Triton server answers at {self.url} ({text}): start it, or check --triton HOST:PORT (the gRPC port, 8001 by default)") from None
            raise BackendError(f"the Triton server at {self.url} refused {what}: {text}") from None

    def _connect(self) -> None:
        self._call("the health check", self.client.is_server_live, client_timeout=self.timeout_s)
        if not self._call("the model check", self.client.is_model_ready, self.model, client_timeout=self.timeout_s):
            index = self._call("the repository index", self.client.get_model_repository_index, as_json=True, client_timeout=self.timeout_s)
            ready = sorted(m["name"] for m in index.get("models", []) if m.get("state") == "READY")
            raise BackendError(
                f"the Triton server at {self.url} has no model {self.model!r} ready (it serves: {', '.join(ready) or 'none'}); "
                "check --model-name, or the server's log for why it did not load"
            )
        config = self._call("the model config", self.client.get_model_config, self.model, as_json=True, client_timeout=self.timeout_s)["config"]
        text = config.get("parameters", {}).get("edgead_client", {}).get("string_value")
        if not text:
            raise BackendError(f"{self.model!r} on {self.url} is not an edgead model (its config has no edgead_client parameter); serve a repository written by `edgead export --format triton`")
        self.info: dict[str, Any] = json.loads(text)
        self.max_batch = int(config.get("max_batch_size") or 1)

    def infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """(N, H, W, 3) frames, sent as they are -> SCORE (N, 1), ANOMALOUS (N, 1), ANOMALY_MAP (N, h, w); N <= max_batch."""
        from tritonclient.utils import np_to_triton_dtype

        grpc = self._grpc
        frames = np.ascontiguousarray(frames)
        datatype = np_to_triton_dtype(frames.dtype)  # the server checks it against the model's (uint8): a wrong one is its error to give
        if datatype is None:
            raise DataError(f"frames of dtype {frames.dtype} cannot be sent to Triton; send uint8 RGB frames")
        tensor = grpc.InferInput("FRAMES", list(frames.shape), datatype)
        tensor.set_data_from_numpy(frames)
        wanted = [grpc.InferRequestedOutput(name) for name in RESULTS]
        result = self._call(f"frames {frames.shape} {frames.dtype} for {self.model}", self.client.infer, self.model, [tensor], outputs=wanted, client_timeout=self.timeout_s)
        return {name: result.as_numpy(name) for name in RESULTS}

    def close(self) -> None:
        client, self.client = getattr(self, "client", None), None
        if client is not None:
            client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Manifest:
    """The part of an artifact that the live loop and drift read: the manifest's postprocess section."""

    manifest: dict[str, Any]


@dataclass
class RemoteBatch:
    """Frames as sent: resized to the served frame size, (N, H, W, 3) uint8."""

    images: np.ndarray


class TritonPredictor:
    """Predictor's interface, scored by a Triton server: predict, and the stages prepare -> infer -> head -> maps.

    `threshold` / `false_alarm_rate`: a threshold for this session instead of the served engine's (from its
    calibration, as the in-process Predictor chooses it); the verdict is then this one, not the server's.
    """

    def __init__(self, url: str, model: str, threshold: float | None = None, false_alarm_rate: float | None = None, timeout_s: float = 60.0) -> None:
        self.client = TritonClient(url, model, timeout_s)
        info = self.client.info
        self.artifact = _Manifest({"postprocess": info["postprocess"], "method": info["method"]})
        self.threshold_choice, self.calibration = choose_threshold(info["postprocess"], info["engine"], threshold, false_alarm_rate)
        self.threshold = self.threshold_choice.value
        dims = info["frame_dims"]
        self.frame_px = None if dims[0] < 0 else (int(dims[0]), int(dims[1]))
        self.size_px = self.frame_px or (0, 0)
        self.max_batch = self.client.max_batch

    def prepare(self, images: list[np.ndarray]) -> RemoteBatch | list[np.ndarray]:
        """RGB frames -> the batch sent: resized to the served frame size (frames of any size for tiling models)."""
        frames = [check_rgb(image) for image in images]
        if self.frame_px is None:
            return frames
        return RemoteBatch(np.ascontiguousarray(np.stack([resize_to_input(f, self.frame_px) for f in frames])))

    def infer(self, batch: RemoteBatch | list[np.ndarray]) -> dict[str, np.ndarray]:
        """The round trip: scores and maps of every frame, in requests of at most the server's max batch."""
        if isinstance(batch, list):  # any-size frames go one by one (a request holds frames of one size)
            parts = [self.client.infer(frame[None]) for frame in batch]
        else:
            parts = [self.client.infer(batch.images[s : s + self.max_batch]) for s in range(0, len(batch.images), self.max_batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in RESULTS}

    def head(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The server ran the scoring head: its outputs pass through."""
        return outputs

    def maps(self, outputs: dict[str, np.ndarray], batch: Any = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """(N,) image scores and N anomaly maps (h, w) float32, as Predictor.maps."""
        return outputs["SCORE"].reshape(-1).astype(np.float32), list(outputs["ANOMALY_MAP"].astype(np.float32, copy=False))

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        if not images:
            return []
        scores, maps = self.maps(self.infer(self.prepare(images)))
        return [Prediction(float(s), bool(s > self.threshold), m) for s, m in zip(scores, maps)]

    def describe(self) -> str:
        info = self.client.info
        engine = info["engine"]
        return (f"Triton server {self.client.url}, model {self.client.model} ({info['method']}, {info['layout']}, "
                f"{engine.get('backend', '?')}/{engine.get('precision', '?')})")

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> TritonPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
