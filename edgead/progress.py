"""Progress reporting that the CLI shows as bars on stderr and library callers can ignore."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Protocol

import click


class Progress(Protocol):
    def __call__(self, label: str, total: int) -> contextlib.AbstractContextManager[Callable[[int], None]]: ...


@contextlib.contextmanager
def silent_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress sink that shows nothing."""
    yield lambda n: None


@contextlib.contextmanager
def bar_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A click progress bar on stderr; plain start/end lines when stderr is not a terminal."""
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True, show_eta=True) as bar:
        yield bar.update
