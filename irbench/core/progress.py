"""Progress reporting without a UI dependency: library code calls `progress.task(...)`;
the CLI plugs in rich progress bars, tests and notebooks get the silent default."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol as _Protocol

Advance = Callable[..., None]
"""`advance(n=1, status=None)`: n more items done; `status` (e.g. "loss 0.41, acc 88%")
replaces the text shown beside the bar."""


class Progress(_Protocol):
    """Anything with `task(description, total)` -> context manager yielding `advance(n)`."""

    def task(self, description: str, total: int | None = None
             ) -> contextlib.AbstractContextManager[Advance]: ...


class NullProgress:
    """Reports nothing."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        yield lambda n=1, status=None: None


NULL_PROGRESS = NullProgress()
