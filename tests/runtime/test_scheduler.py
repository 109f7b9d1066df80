"""The patch scheduler on the CPU: order, back-pressure, shutdown, errors inside a batch."""

import numpy as np
import pytest

from edgead.runtime.scheduler import BatchFailed, PatchScheduler, SyncSlot, make_slots


class FakeAsyncSlot:
    """Completes only when the test says so (or when waited on); records what ran."""

    def __init__(self, name, log):
        self.name, self.log = name, log
        self.batch = None
        self.finished = False
        self.closed = False

    def submit(self, batch):
        assert self.batch is None, "a slot must not be resubmitted before wait()"
        self.batch, self.finished = batch, False
        self.log.append(("submit", self.name, int(batch[0])))

    def ready(self):
        return self.finished

    def wait(self):
        batch, self.batch = self.batch, None
        self.log.append(("wait", self.name, int(batch[0])))
        if batch[0] < 0:
            raise RuntimeError("kernel failed")
        return batch * 10

    def close(self):
        self.closed = True


class DoubleBackend:
    device = "cpu"

    def infer(self, batch):
        if np.any(batch < 0):
            raise ValueError("negative input")
        return batch * 2


def test_results_come_back_in_submission_order():
    log = []
    slots = [FakeAsyncSlot(i, log) for i in range(3)]
    with PatchScheduler(slots) as scheduler:
        out = list(scheduler.map((i, np.array([i])) for i in range(10)))
    assert [tag for tag, _ in out] == list(range(10))
    assert all(int(result[0]) == 10 * tag for tag, result in out)
    assert all(s.closed for s in slots)


def test_full_ring_blocks_on_the_oldest_batch():
    log = []
    slots = [FakeAsyncSlot(i, log) for i in range(2)]
    scheduler = PatchScheduler(slots)
    assert scheduler.submit(np.array([0]), 0) == []
    assert scheduler.submit(np.array([1]), 1) == []
    assert scheduler.in_flight == 2
    done = scheduler.submit(np.array([2]), 2)  # ring full: waits for batch 0 first, reuses its slot
    assert [tag for tag, _ in done] == [0]
    assert log[-2:] == [("wait", 0, 0), ("submit", 0, 2)]
    assert scheduler.in_flight == 2


def test_poll_returns_only_finished_batches_in_order():
    log = []
    slots = [FakeAsyncSlot(i, log) for i in range(3)]
    scheduler = PatchScheduler(slots)
    for i in range(3):
        scheduler.submit(np.array([i]), i)
    slots[1].finished = True  # batch 1 done but batch 0 not: nothing may overtake batch 0
    assert scheduler.poll() == []
    slots[0].finished = True
    assert [tag for tag, _ in scheduler.poll()] == [0, 1]
    assert [tag for tag, _ in scheduler.drain()] == [2]


def test_error_inside_a_batch_names_it_and_keeps_the_ring_usable():
    log = []
    scheduler = PatchScheduler([FakeAsyncSlot(i, log) for i in range(2)])
    scheduler.submit(np.array([5]), "tile-a")
    scheduler.submit(np.array([-1]), "tile-b")
    first = scheduler._retire_oldest()
    assert first[0] == "tile-a"
    with pytest.raises(BatchFailed, match="tile-b.*kernel failed") as info:
        scheduler.drain()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert scheduler.in_flight == 0
    assert [tag for tag, _ in scheduler.map([("again", np.array([1]))])] == ["again"]


def test_map_cancels_in_flight_work_when_the_consumer_stops():
    log = []
    slots = [FakeAsyncSlot(i, log) for i in range(3)]
    scheduler = PatchScheduler(slots)
    stream = scheduler.map((i, np.array([i])) for i in range(20))
    next(stream)
    stream.close()  # GeneratorExit inside map: everything in flight is waited for and dropped
    assert scheduler.in_flight == 0
    assert all(s.batch is None for s in slots)


def test_cancel_discards_and_close_is_idempotent():
    log = []
    slots = [FakeAsyncSlot(i, log) for i in range(2)]
    scheduler = PatchScheduler(slots)
    scheduler.submit(np.array([1]), 1)
    scheduler.submit(np.array([-1]), 2)  # fails, but it is being discarded: logged, not raised
    assert scheduler.cancel() == 2
    scheduler.close()
    scheduler.close()
    with pytest.raises(Exception, match="closed"):
        scheduler.submit(np.array([3]))


def test_sync_slot_is_the_cpu_path():
    scheduler = PatchScheduler(make_slots(DoubleBackend(), streams=4, max_batch=8))
    out = list(scheduler.map((i, np.full(3, i)) for i in range(5)))
    assert [int(r[0]) for _, r in out] == [0, 2, 4, 6, 8]
    with pytest.raises(BatchFailed, match="negative input"):
        list(scheduler.map([(0, np.array([-1]))]))


def test_slot_count_validation():
    with pytest.raises(ValueError):
        PatchScheduler([])
    with pytest.raises(ValueError):
        make_slots(DoubleBackend(), streams=0, max_batch=1)
    assert isinstance(make_slots(DoubleBackend(), 2, 4)[0], SyncSlot)
