"""The widget analytics counters: impressions and clicks per widget, placement and day.

A beacon hit is an atomic ``incr`` of a counter in the cache (``SIMILARITY["BEACON_CACHE"]``):
one round trip to Redis, no database write. :func:`flush` moves the counts into
``WidgetStat`` (what the admin reads): from the periodic task ``similarity.flush_widget_stats``
and whenever the admin page opens. Nothing is lost on the way:

- a flush *claims* what it read by decrementing the counter by exactly that amount, so hits
  arriving meanwhile stay in the counter for the next flush; if the database write fails the
  claims are given back (``incr``);
- flushes take a lock (``cache.add``); should two overlap anyway, a claim that took the counter
  below zero is given back, so nothing is counted twice (on Redis and the local-memory cache;
  Memcached stops decrements at zero, the lock alone protects it);
- when the cache is not one that every process shares with atomic increments (the embedded
  default's local-memory cache is per process), or it fails, the hit is one UPDATE of the
  counter row as before (:func:`add_to_database`).

A cache that is down or hung (:mod:`similarity.cache_guard`, the breaker the pages use, one per
``CACHES`` alias): the beacon still answers 204 and the hit is counted in the database. A refused
connection fails at once; a hung Redis costs the one hit that meets it its socket timeout (set
``socket_timeout`` in ``CACHES[...]["OPTIONS"]``, docs/deploy.md; without it that hit waits for
the kernel). Either failure opens the breaker for ``SIMILARITY["BREAKER_SECONDS"]``: the hits
meanwhile go straight to the database without touching the cache, and the first hit after it
tries the cache again. What can still go wrong: a hit whose increment reached Redis but whose
answer timed out is counted in the database too (counted twice rather than lost); a counter
incremented whose listing then failed is flushed only once a later hit of it (the same widget,
placement, event and day) lists it; and with the database down as well the beacon fails. The
flush (the periodic task, the admin page) does not use the breaker: it raises, the task retries at
its next run and the admin page shows its figures with a warning; the counts wait in the cache.

Cache layout: ``<prefix>:<day>:<digest of widget and placement>:<i|c>`` counters, and per day a
numbered list of the counters created that day (``<prefix>:<day>:n`` and ``<prefix>:<day>:slot:N``),
since a cache cannot be listed; a counter's ``:listed`` marker, read in the same round trip as
the increment, says it is on the list (if listing fails, the next hit lists it). Days before
yesterday are removed from the cache once flushed.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from django.core.cache import BaseCache, caches
from django.core.cache.backends.redis import RedisCache
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .. import cache_guard
from ..conf import get_settings
from .models import WidgetStat

EVENTS = {"i": "impressions", "c": "clicks"}
PREFIX = "similarity:beacon"
#: cache backends that every process shares and that increment atomically
ATOMIC_SHARED = ("RedisCache", "PyMemcacheCache", "PyLibMCCache")
#: how far back a flush looks when it does not know what was flushed last (the cache lost it)
LOOKBACK_DAYS = 7
LOCK_SECONDS = 300
LOCK = f"{PREFIX}:flush-lock"
#: the first day a flush looks at (the days before it are flushed and gone from the cache)
MARK = f"{PREFIX}:first-day"


def _cache() -> BaseCache:
    return caches[get_settings().beacon_cache]


def buffered() -> bool:
    """Whether beacon hits count in the cache (else straight in the database)."""
    setting = get_settings().beacon_buffer
    if setting is not None:
        return setting
    return type(_cache()).__name__ in ATOMIC_SHARED


def _counter(day: date, widget: str, placement: str, event: str) -> str:
    # the placement is the shop's free text: a digest keeps the key valid for Memcached
    digest = hashlib.sha1(f"{widget}\x1f{placement}".encode(), usedforsecurity=False).hexdigest()[:16]
    return f"{PREFIX}:{day.isoformat()}:{digest}:{event}"


def _incr(cache: BaseCache, key: str, amount: int = 1, marker: str = "") -> tuple[int, bool]:
    """Add ``amount`` to ``key`` (created if missing): (the new value, whether ``marker`` exists)."""
    if isinstance(cache, RedisCache):
        # one round trip instead of two (EXISTS, INCR) for RedisCache.incr and one more for the
        # marker: a pipeline of SET NX (creates the counter at 0), INCR, EXISTS
        redis_key = cache.make_and_validate_key(key)
        pipe = cache._cache.get_client(redis_key, write=True).pipeline(transaction=False)
        pipe.set(redis_key, 0, nx=True)
        pipe.incr(redis_key, amount)
        if marker:
            pipe.exists(cache.make_and_validate_key(marker))
        results = pipe.execute()
        return int(results[1]), bool(results[2]) if marker else True
    try:
        value = cache.incr(key, amount)
    except ValueError:  # no such key yet
        value = amount if cache.add(key, amount, timeout=None) else cache.incr(key, amount)
    if not marker:
        return value, True
    try:
        return value, cache.get(marker) is not None
    except Exception:  # counted already, so no error (the caller would count it again): listing decides
        return value, False


def count(widget: str, placement: str, event: str) -> None:
    """One impression (``event="i"``) or click (``"c"``) of ``widget`` at ``placement`` today."""
    day = timezone.now().date()
    if not buffered():
        add_to_database(day, widget, placement, **{EVENTS[event]: 1})
        return
    alias, counter = get_settings().beacon_cache, _counter(day, widget, placement, event)
    counted = cache_guard.guarded(f"beacon count {counter}",
                                  lambda cache: _incr(cache, counter, marker=f"{counter}:listed"), None, alias)
    if counted is None:  # the cache failed (now, or a moment ago: breaker open): the database counts it
        add_to_database(day, widget, placement, **{EVENTS[event]: 1})
        return
    if not counted[1]:  # a failure is logged; counted already, the next hit of this counter lists it
        cache_guard.guarded(f"beacon listing {counter}",
                            lambda cache: _list(cache, day, counter, (widget, placement, event)), None, alias)


def _list(cache: BaseCache, day: date, counter: str, row: tuple[str, str, str]) -> None:
    """List a counter so that a flush finds it: under a slot number of its own (``incr`` hands
    out each number once), then its marker (set last: a failure leaves it for the next hit;
    listing a counter twice is harmless)."""
    slot, _ = _incr(cache, f"{PREFIX}:{day.isoformat()}:n")
    cache.set(f"{PREFIX}:{day.isoformat()}:slot:{slot}", list(row), timeout=None)
    cache.set(f"{counter}:listed", 1, timeout=None)
    cache.add(MARK, day.isoformat(), timeout=None)  # where the very first flush starts


def count_in_cache(day: date, widget: str, placement: str, event: str) -> None:
    """Count one hit of ``day`` in the cache (errors raise)."""
    cache, counter = _cache(), _counter(day, widget, placement, event)
    if not _incr(cache, counter, marker=f"{counter}:listed")[1]:
        _list(cache, day, counter, (widget, placement, event))


def flush() -> dict[str, Any]:
    """Move the cached counts into ``WidgetStat``. Returns ``{"flushed": hits moved, "days":
    days looked at}``, or ``{"skipped": reason}`` while another flush holds the lock."""
    cache = _cache()
    if not cache.add(LOCK, 1, timeout=LOCK_SECONDS):
        return {"skipped": "another flush is running"}
    try:
        today = timezone.now().date()
        mark = cache.get(MARK)
        first = date.fromisoformat(mark) if mark else today - timedelta(days=LOOKBACK_DAYS)
        days = [first + timedelta(days=i) for i in range((today - first).days + 1)]
        flushed = 0
        for day in days:
            flushed += _flush_day(cache, day)
        # days before yesterday get no more hits: their keys go, and the next flush starts at
        # the first day still in the cache
        yesterday = today - timedelta(days=1)
        kept = [day for day in days if day >= yesterday or not _retire(cache, day)]
        if kept[0] != first:
            cache.set(MARK, kept[0].isoformat(), timeout=None)
        return {"flushed": flushed, "days": len(days)}
    finally:
        cache.delete(LOCK)


def _listed(cache: BaseCache, day: date) -> dict[str, tuple[str, str, str]]:
    """The counters created on ``day``: cache key → (widget, placement, event)."""
    slots = int(cache.get(f"{PREFIX}:{day.isoformat()}:n") or 0)
    listed = cache.get_many([f"{PREFIX}:{day.isoformat()}:slot:{i}" for i in range(1, slots + 1)])
    return {_counter(day, *row): (row[0], row[1], row[2]) for row in listed.values()}


def _flush_day(cache: BaseCache, day: date) -> int:
    counters = _listed(cache, day)
    claims: dict[str, int] = {}
    for key, seen in cache.get_many(list(counters)).items():
        if not seen or int(seen) <= 0:
            continue
        left = cache.decr(key, int(seen))  # hits after the read stay in the counter
        if left < 0:  # an overlapping flush claimed part of it: give that part back
            cache.incr(key, -left)
        if int(seen) + min(left, 0) > 0:
            claims[key] = int(seen) + min(left, 0)
    totals: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"impressions": 0, "clicks": 0})
    for key, claimed in claims.items():
        widget, placement, event = counters[key]
        totals[widget, placement][EVENTS[event]] += claimed
    try:
        with transaction.atomic():
            for (widget, placement), amounts in totals.items():
                add_to_database(day, widget, placement, **amounts)
    except Exception:
        for key, claimed in claims.items():  # the counts go back for the next flush
            cache.incr(key, claimed)
        raise
    return sum(claims.values())


def _retire(cache: BaseCache, day: date) -> bool:
    """Drop a flushed day's keys; False (nothing dropped) if a count is left in it."""
    counters = _listed(cache, day)
    if any(cache.get_many(list(counters)).values()):
        return False
    slots = int(cache.get(f"{PREFIX}:{day.isoformat()}:n") or 0)
    cache.delete_many([*counters, *(f"{key}:listed" for key in counters), f"{PREFIX}:{day.isoformat()}:n",
                       *(f"{PREFIX}:{day.isoformat()}:slot:{i}" for i in range(1, slots + 1))])
    return True


def add_to_database(day: date, widget: str, placement: str, impressions: int = 0, clicks: int = 0) -> None:
    """Add to the day's counter row: one UPDATE (an INSERT the first time of the day)."""
    if not impressions and not clicks:
        return
    rows = WidgetStat.objects.filter(widget=widget, placement=placement, day=day)
    change = {"impressions": F("impressions") + impressions, "clicks": F("clicks") + clicks}
    if rows.update(**change):
        return
    try:
        with transaction.atomic():
            WidgetStat.objects.create(widget=widget, placement=placement, day=day,
                                      impressions=impressions, clicks=clicks)
    except IntegrityError:  # another request created the day's row first
        rows.update(**change)
