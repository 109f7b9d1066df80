"""Patch scheduler: batches of tiles or patches go to a ring of slots so that copies and compute overlap.

A slot is one CUDA stream with its own execution context, pinned host buffers and device buffers
(TensorRT, TorchScript on CUDA), or a synchronous slot that computes at submit (the CPU path, ONNX
Runtime). The scheduler keeps every slot busy, returns results in submission order, and blocks a
producer when the ring is full (back-pressure) instead of queueing without bound.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np

from edgead.errors import EdgeADError
from edgead.runtime.tiling import Patches

log = logging.getLogger(__name__)


class Slot(Protocol):
    def submit(self, batch: np.ndarray) -> None: ...
    def ready(self) -> bool: ...
    def wait(self) -> np.ndarray: ...
    def close(self) -> None: ...


class BatchFailed(EdgeADError):
    """Inference of one batch failed; `tag` names the batch, the cause is chained."""

    def __init__(self, tag: Any, cause: BaseException) -> None:
        super().__init__(f"batch {tag!r} failed: {cause.__class__.__name__}: {cause}")
        self.tag = tag


class SyncSlot:
    """Computes at submit with `backend.infer`: the CPU path through the same scheduler code."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._result: np.ndarray | None = None
        self._error: BaseException | None = None

    def submit(self, batch: np.ndarray) -> None:
        try:
            self._result, self._error = self.backend.infer(np.asarray(batch)), None  # lazy patches are copied here, once
        except Exception as exc:  # reported at wait(), in order, like an asynchronous slot
            self._result, self._error = None, exc

    def ready(self) -> bool:
        return True

    def wait(self) -> np.ndarray:
        result, error = self._result, self._error
        self._result = self._error = None
        if error is not None:
            raise error
        return result

    def close(self) -> None:
        self._result = self._error = None


def stage(batch: Any, out: np.ndarray) -> np.ndarray:
    """Copy a batch into `out[:n]` (a slot's pinned input): lazy patches straight from their frames, arrays as they are."""
    if isinstance(batch, Patches):
        return batch.fill(out)
    np.copyto(out[: batch.shape[0]], batch)
    return out[: batch.shape[0]]


class PatchScheduler:
    """A ring of slots; results come back in submission order; a full ring blocks the producer."""

    def __init__(self, slots: Iterable[Slot]) -> None:
        self._slots = list(slots)
        if not self._slots:
            raise ValueError("a scheduler needs at least one slot")
        self._free: deque[Slot] = deque(self._slots)
        self._in_flight: deque[tuple[Any, Slot]] = deque()
        self._closed = False

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def submit(self, batch: np.ndarray, tag: Any = None) -> list[tuple[Any, np.ndarray]]:
        """Enqueue a batch; if every slot is busy, first wait for the oldest. Returns the results that finished."""
        if self._closed:
            raise EdgeADError("the scheduler is closed")
        done = [self._retire_oldest()] if not self._free else []
        slot = self._free.popleft()
        try:
            slot.submit(batch)
        except BaseException:
            self._free.appendleft(slot)
            raise
        self._in_flight.append((tag, slot))
        return done

    def poll(self) -> list[tuple[Any, np.ndarray]]:
        """Results of the oldest batches that are already done, without blocking."""
        done = []
        while self._in_flight and self._in_flight[0][1].ready():
            done.append(self._retire_oldest())
        return done

    def drain(self) -> list[tuple[Any, np.ndarray]]:
        """Wait for every batch in flight; results in submission order."""
        return [self._retire_oldest() for _ in range(len(self._in_flight))]

    def cancel(self) -> int:
        """Wait for and discard everything in flight (enqueued GPU work cannot be recalled); returns how many."""
        dropped = 0
        while self._in_flight:
            tag, slot = self._in_flight.popleft()
            try:
                slot.wait()
            except Exception as exc:  # the batch is being discarded; its failure is logged, not lost
                log.warning("discarded batch %r had failed: %s", tag, exc)
            finally:
                self._free.append(slot)
            dropped += 1
        return dropped

    def map(self, batches: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray]]:
        """Stream (tag, batch) pairs through the ring and yield (tag, output) in order."""
        try:
            for tag, batch in batches:
                yield from self.submit(batch, tag)
                yield from self.poll()
            yield from self.drain()
        except BaseException:
            self.cancel()
            raise

    def _retire_oldest(self) -> tuple[Any, np.ndarray]:
        tag, slot = self._in_flight.popleft()
        try:
            return tag, slot.wait()
        except Exception as exc:
            raise BatchFailed(tag, exc) from exc
        finally:
            self._free.append(slot)

    def close(self) -> None:
        """Cancel what is in flight and close every slot; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.cancel()
        finally:
            errors = []
            for slot in self._slots:
                try:
                    slot.close()
                except Exception as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]

    def __enter__(self) -> PatchScheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_slots(backend: Any, streams: int, max_batch: int) -> list[Slot]:
    """`streams` asynchronous slots where the backend has them (CUDA), else one synchronous slot."""
    factory = getattr(backend, "create_slot", None)
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    if factory is None or not backend.device.startswith("cuda"):
        return [SyncSlot(backend)]
    return [factory(max_batch) for _ in range(streams)]
