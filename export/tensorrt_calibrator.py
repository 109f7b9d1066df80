"""TensorRT 10's implicit INT8 quantization: an entropy calibrator fed with good images (uint8 NHWC batches).

Only for TensorRT 10 and only where a user asks for it (`--int8-calibrator`): TensorRT 11 removed the
calibrators, the INT8 builder flag and the calibration profile; INT8 there comes from a Q/DQ graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgead.errors import EdgeADError
from edgead.runtime import cuda


def entropy_calibrator(trt: Any, images: np.ndarray | None, batch: int, cache: Path | None, write: Any) -> Any:
    """An IInt8EntropyCalibrator2 feeding uint8 NHWC batches; reads `cache` only when no images are given.

    write(path, data) stores the calibration cache (atomically).
    """

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # the binding's trampoline needs its base initialised explicitly
            self.next_index, self.error = 0, None
            self.stream = self.buffer = None
            if images is not None:
                self.stream = cuda.Stream()
                self.buffer = cuda.DeviceBuffer(batch * images[0].nbytes)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            # exceptions must not cross into TensorRT: keep the first and end calibration
            if images is None or self.error is not None or self.next_index + batch > len(images):
                return None  # the remainder smaller than a batch is left out
            try:
                chunk = np.ascontiguousarray(images[self.next_index : self.next_index + batch])
                cuda.copy_htod_async(self.buffer.ptr, chunk, self.stream)
                self.stream.synchronize()
            except Exception as exc:
                self.error = exc
                return None
            self.next_index += batch
            return [self.buffer.ptr for _ in names]

        def read_calibration_cache(self) -> bytes | None:
            if images is None and cache is not None and cache.is_file():
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if cache is not None:
                try:
                    write(cache, bytes(data))
                except OSError as exc:
                    self.error = EdgeADError(f"could not write the calibration cache {cache}: {exc}")

        def close(self) -> None:
            cuda.close_all([self.stream, self.buffer])

    return EntropyCalibrator()


def attach_calibrator(trt: Any, builder: Any, config: Any, source: Any, images: np.ndarray | None, batch: int, cache: Path | None, write: Any) -> Any:
    """Set the INT8 calibrator and its calibration profile (one fixed batch) on a TensorRT 10 builder config."""
    calibrator = entropy_calibrator(trt, images, batch, cache, write)
    config.int8_calibrator = calibrator
    # calibration runs at the calibration profile's shape, which every batch must match exactly
    profile = builder.create_optimization_profile()
    item = tuple(source.shape)[1:]
    profile.set_shape(source.name, *[(batch, *item)] * 3)
    if not config.set_calibration_profile(profile):  # False when TensorRT did not take the profile
        error = EdgeADError(
            f"TensorRT refused the INT8 calibration profile (batches of {batch} x {item} for input {source.name!r}); "
            "build INT8 from the Q/DQ graph instead (`edgead export --engine int8` without --int8-calibrator)"
        )
        cuda.close_all([calibrator], pending=error)
        raise error
    return calibrator
