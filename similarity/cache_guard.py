"""Django's cache as the storefront path uses it: a cache that is down or hung costs a log line
and a miss, never the page.

Every read and write of the widget caches, the behaviour model's live version, trending and the
merchandising version goes through here. A call that raises (connection refused, a socket
timeout on a hung Redis: set ``socket_timeout`` in ``CACHES[...]["OPTIONS"]``, docs/deploy.md)
answers the default, and the cache is left alone for ``SIMILARITY["BREAKER_SECONDS"]``
(:mod:`similarity.breaker`). So a hung cache costs one timeout, not one per call, and the first
call after that tries it again. The pages then do the work the cache would have saved them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.cache import DEFAULT_CACHE_ALIAS, caches

from . import breaker

logger = logging.getLogger(__name__)

T = TypeVar("T")


def label(alias: str = DEFAULT_CACHE_ALIAS) -> str:
    """The breaker's name for the cache ``alias``."""
    return f"cache:{alias}"


def guarded(action: str, call: Callable[[Any], T], default: T, alias: str = DEFAULT_CACHE_ALIAS) -> T:
    """``call(cache)``, or ``default`` when the cache failed (now, or a moment ago)."""
    if breaker.is_open(label(alias)):
        return default
    try:
        return call(caches[alias])
    except Exception as exc:  # the page goes on without the cache
        if transport_error(exc):  # down or hung: left alone for a while
            logger.warning("cache %r: %s failed (%s); going on without it for a while", alias, action, exc)
            breaker.trip(label(alias), str(exc))
        else:  # one bad value (e.g. unpickling after a deploy): this call only
            logger.warning("cache %r: %s failed (%s)", alias, action, exc)
        return default


def transport_error(exc: BaseException) -> bool:
    """A connection refused, reset or timed out (redis-py's errors, sockets, pymemcache's)."""
    if isinstance(exc, OSError | TimeoutError):
        return True
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency of the example project only
        return False
    return isinstance(exc, RedisConnectionError | RedisTimeoutError)


def invalidate(action: str, call: Callable[[Any], Any], alias: str = DEFAULT_CACHE_ALIAS) -> None:
    """A write other processes rely on (a new merchandising version, a new live model): tried
    even while the breaker is open; a failure is an error in the log, and other processes see
    the change when their cached copy expires (at most its timeout)."""
    try:
        call(caches[alias])
    except Exception as exc:
        logger.error("cache %r: %s failed (%s); other processes see the change when their copy expires",
                     alias, action, exc)


def get(key: str, default: Any = None, alias: str = DEFAULT_CACHE_ALIAS) -> Any:
    return guarded(f"get {key}", lambda c: c.get(key, default), default, alias)


def set(key: str, value: Any, timeout: float | None, alias: str = DEFAULT_CACHE_ALIAS) -> None:  # noqa: A001
    guarded(f"set {key}", lambda c: c.set(key, value, timeout), None, alias)


def add(key: str, value: Any, timeout: float | None, alias: str = DEFAULT_CACHE_ALIAS) -> bool:
    return guarded(f"add {key}", lambda c: bool(c.add(key, value, timeout)), False, alias)

