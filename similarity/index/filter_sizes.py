"""How many points a filter keeps, as the exact-or-graph choice asks before a filtered search
(``INDEX["EXACT_FILTER_KB"]``, :meth:`IndexSettings.exact_for`).

On the Qdrant server that estimate is a request of its own (``count``, ``exact=False``) before
every filtered search. The same few filters come back on every page (a category, in stock), and
the estimate does not need to be fresh to the second, so :class:`FilterSizes` keeps each one for
:data:`SECONDS`. A filter of point ids needs no request at all: it keeps at most that many.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from .base import SearchFilter

#: how long an estimated size is reused (a rebuild or a bulk import moves it by then)
SECONDS = 60.0
#: filters remembered per index (the oldest is forgotten first)
CAPACITY = 1024


def selecting(search_filter: SearchFilter) -> SearchFilter:
    """The conditions of ``search_filter`` that decide its size: without its exclusions (payload
    values or ids left out), which only take a few points from the many it keeps. Filters that
    differ only in them share one size, counted without them."""
    return replace(search_filter, exclude={}, exclude_any={}, exclude_ids=frozenset())


def selecting_key(search_filter: SearchFilter) -> str:
    return json.dumps([search_filter.match, search_filter.match_any, search_filter.ranges],
                      sort_keys=True, default=str)


class FilterSizes:
    """Estimated filter sizes, each reused for ``seconds`` (thread-safe)."""

    def __init__(self, *, seconds: float | None = None, capacity: int = CAPACITY) -> None:
        self.seconds = SECONDS if seconds is None else seconds
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def size(self, search_filter: SearchFilter, count: Callable[[SearchFilter], int]) -> int:
        """About how many points ``search_filter`` keeps, at most: ``count(f)`` asks the store for
        :func:`selecting` ``(search_filter)``, and its answer is kept."""
        if search_filter.ids is not None:
            return len(search_filter.ids)
        key = selecting_key(search_filter)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry[0] < self.seconds:
                return entry[1]
        points = int(count(selecting(search_filter)))
        with self._lock:
            self._entries[key] = (now, points)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return points

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
