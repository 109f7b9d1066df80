"""Progress in a service log: a line with rate and ETA every few seconds, and one at the end."""

import io

from edgead.progress import line_progress


def test_lines_every_few_seconds_with_rate_and_eta():
    now = [0.0]
    out = io.StringIO()
    with line_progress("coreset", 100, every_s=5, out=out, clock=lambda: now[0]) as advance:
        for _ in range(10):
            now[0] += 2.0
            advance(10)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # at 6 s, 12 s, 18 s and the end
    assert lines[0] == "coreset: 30/100 (30%), 5/s, ETA 14s"
    assert lines[-1] == "coreset: 100/100 (100%), 5/s, done in 20s"


def test_quiet_until_the_first_interval():
    out = io.StringIO()
    with line_progress("features", 3, every_s=5, out=out, clock=lambda: 0.0) as advance:
        advance(3)
    assert out.getvalue().splitlines() == ["features: 3/3 (100%), 3e+09/s, done in 0s"]
