"""Progress reporting that the CLI shows as bars on stderr and library callers can ignore."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TextIO

import click

LINE_EVERY_S = 5.0  # a service log gets one line this often while a step runs


class Progress(Protocol):
    def __call__(self, label: str, total: int) -> contextlib.AbstractContextManager[Callable[[int], None]]: ...


@contextlib.contextmanager
def silent_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress sink that shows nothing."""
    yield lambda n: None


@contextlib.contextmanager
def bar_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A click progress bar on a terminal; lines with rate and ETA every few seconds when stderr is a log."""
    if not sys.stderr.isatty():
        with line_progress(label, total) as advance:
            yield advance
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True, show_eta=True) as bar:
        yield bar.update


@contextlib.contextmanager
def line_progress(
    label: str, total: int, every_s: float = LINE_EVERY_S, out: TextIO | None = None, clock: Callable[[], float] = time.monotonic
) -> Iterator[Callable[[int], None]]:
    """Plain lines "label: done/total (pct), rate/s, ETA" every `every_s` seconds, and one at the end."""
    out = sys.stderr if out is None else out
    started = last = clock()
    done = 0

    def line(final: bool) -> None:
        elapsed = max(clock() - started, 1e-9)
        rate = done / elapsed
        share = f" ({100 * done / total:.0f}%)" if total else ""
        tail = f"done in {_duration(elapsed)}" if final else f"ETA {_duration((total - done) / rate) if rate > 0 else '?'}"
        click.echo(f"{label}: {done}/{total}{share}, {rate:.3g}/s, {tail}", file=out)

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        now = clock()
        if now - last >= every_s:
            last = now
            line(final=False)

    yield advance
    line(final=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
