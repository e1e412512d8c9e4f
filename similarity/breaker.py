"""A short circuit breaker per spec: while the vector store is down, reads answer "unavailable"
at once instead of waiting for a timeout on every page view.

The first read that finds the store unavailable opens the breaker for
``SIMILARITY["BREAKER_SECONDS"]``; until then reads of that spec return the same message without
touching the store (pages show their fallback); the first read after it tries the store again.
Writes (indexing tasks) never look at it: they have retries of their own.
"""

from __future__ import annotations

import threading
import time

from .conf import get_settings

_lock = threading.Lock()
_open: dict[str, tuple[float, str]] = {}


def is_open(label: str) -> str | None:
    """The message of the failure that opened the breaker, while it is open; else ``None``."""
    with _lock:
        entry = _open.get(label)
        if entry is None:
            return None
        until, message = entry
        if time.monotonic() >= until:
            del _open[label]  # half-open: the next read tries the store
            return None
        return message


def trip(label: str, message: str) -> None:
    seconds = get_settings().breaker_seconds
    if seconds > 0:
        with _lock:
            _open[label] = (time.monotonic() + seconds, message)


def close(label: str | None = None) -> None:
    with _lock:
        if label is None:
            _open.clear()
        else:
            _open.pop(label, None)
