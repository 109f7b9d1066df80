"""The Python-backend model's batching, without a server: requests merged into one run, split back, errors kept apart."""

import numpy as np

from edgead.errors import DataError
from edgead.runtime.triton_python import one_line, run_batched


class Doubler:
    """A served model: FRAMES (N, ...) -> OUT = 2 * FRAMES; counts its runs; refuses frames holding a 7."""

    inputs = ("FRAMES",)

    def __init__(self):
        self.runs = []

    def run(self, inputs):
        frames = inputs["FRAMES"]
        self.runs.append(len(frames))
        if (frames == 7).any():
            raise DataError("a frame holds a 7:\n  send another")
        return {"OUT": frames * 2}


def test_requests_run_as_one_batch_and_come_back_in_order():
    model = Doubler()
    requests = [{"FRAMES": np.full((n, 2), i)} for i, n in enumerate((1, 3, 2))]
    out = run_batched(model, requests)
    assert model.runs == [6]
    for i, (request, result) in enumerate(zip(requests, out)):
        np.testing.assert_array_equal(result["OUT"], request["FRAMES"] * 2)


def test_a_bad_request_gets_its_own_error_and_the_others_their_results():
    model = Doubler()
    requests = [{"FRAMES": np.full((1, 2), 1)}, {"FRAMES": np.full((2, 2), 7)}, {"FRAMES": np.full((1, 2), 3)}]
    out = run_batched(model, requests)
    assert isinstance(out[1], DataError) and one_line(out[1]) == "a frame holds a 7: send another"
    np.testing.assert_array_equal(out[0]["OUT"], [[2, 2]])
    np.testing.assert_array_equal(out[2]["OUT"], [[6, 6]])
    assert model.runs == [4, 1, 2, 1]  # the batch, then one by one


def test_frames_of_different_sizes_run_request_by_request():
    model = Doubler()
    out = run_batched(model, [{"FRAMES": np.ones((1, 4, 4))}, {"FRAMES": np.ones((1, 5, 4))}])
    assert model.runs == [1, 1] and [o["OUT"].shape for o in out] == [(1, 4, 4), (1, 5, 4)]


def test_other_errors_keep_their_type_in_one_line():
    assert one_line(ValueError("bad\nvalue")) == "ValueError: bad value"
