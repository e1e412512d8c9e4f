"""Recording what shoppers do: product views per visitor session, orders as events.

Views cost no session save once the visitor has a session: they go to a cache
(``SIMILARITY["VIEWS_CACHE"]``, a ``CACHES`` alias, ``"default"`` by default) under a digest of
the session key, for ``SESSION_COOKIE_AGE`` after the last view: one round trip on Redis (a GET
and a SET on other caches), no session load, and nothing for the session middleware to save
(with Django's default database sessions a save is a commit, 2-31 ms; docs/behaviour.md). A
visitor who has no session yet gets one: the first view goes into ``request.session`` as before,
which makes Django create the session and send its cookie (that save is unavoidable; no cookie
of ours). :func:`recent_views` merges the two, so sessions that hold
views from before the cache, or from while it was down, keep them.

The views stay in the session (the old way) when ``VIEWS_CACHE`` is ``""``, when the session is
a signed cookie (it has no stable key; the session is the cookie, signing costs ~0.15 ms) and
when the cache is a ``DummyCache``. A cache that fails is logged and skipped: the page never breaks.
A login keeps the views (the new session key takes them over, as Django keeps the session's data);
a logout, or a login that empties another user's session, drops them, as it drops the session's.

``record_purchase`` is the documented API for a shop's checkout.
"""

from __future__ import annotations

import hashlib
import logging
import time as clock
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.core.cache import BaseCache, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.redis import RedisCache
from django.utils import timezone

from .. import breaker, cache_guard, registry
from ..conf import get_settings
from .models import Event, EventKind

logger = logging.getLogger(__name__)

#: the session key holding the views kept in the session: [[model label, object key, epoch seconds], ...]
SESSION_KEY = "similarity_recent"
#: views kept per session (the oldest go first)
RECENT_VIEWS = 20
#: cache keys: ``<prefix>:<digest of the session key>`` (a session key must not be readable in the cache)
CACHE_PREFIX = "similarity:views"


def views_cache() -> BaseCache | None:
    """The cache that holds recent views, or None: they stay in the session."""
    alias = get_settings().views_cache
    if not alias or settings.SESSION_ENGINE.endswith("signed_cookies"):
        return None
    store = caches[alias]
    return None if isinstance(store, DummyCache) else store


def _breaker_label() -> str:
    return cache_guard.label(get_settings().views_cache)  # one breaker per cache, shared with the widgets


def _failed(action: str, exc: Exception) -> None:
    """A cache that failed (down, or a timeout on a hung one) is left alone for
    ``BREAKER_SECONDS``: pages stop waiting on it; the first view after that tries it again."""
    logger.warning("recent views: the cache failed (%s); %s", exc, action)
    breaker.trip(_breaker_label(), str(exc))


def _cache_key(session_key: str) -> str:
    return f"{CACHE_PREFIX}:{hashlib.sha256(session_key.encode()).hexdigest()[:32]}"


def _with_view(stored: list[Any], label: str, key: str) -> list[Any] | None:
    """``stored`` with this view newest, or None when it already is (a reload: nothing to write)."""
    if stored and stored[-1][0] == label and stored[-1][1] == key:
        return None
    recent = [row for row in stored if not (row[0] == label and row[1] == key)]
    recent.append([label, key, int(clock.time())])
    return recent[-RECENT_VIEWS:]


# The views in the cache. Any Django cache: a list, read and written back (a GET and, unless the
# view is a reload, a SET). RedisCache: a sorted set (member "<label> <key>", score the time), so
# that a view is one round trip with nothing to read first: ZADD (a repeat only moves), the trim
# to RECENT_VIEWS and the expiry in one MULTI/EXEC.

def _redis(store: RedisCache, cache_key: str) -> tuple[Any, str]:
    redis_key = store.make_and_validate_key(cache_key)
    return store._cache.get_client(redis_key, write=True), redis_key


def _add(store: BaseCache, cache_key: str, label: str, key: str) -> None:
    if isinstance(store, RedisCache):
        client, redis_key = _redis(store, cache_key)
        pipe = client.pipeline(transaction=True)
        pipe.zadd(redis_key, {f"{label} {key}": clock.time()})
        pipe.zremrangebyrank(redis_key, 0, -RECENT_VIEWS - 1)
        pipe.expire(redis_key, settings.SESSION_COOKIE_AGE)
        pipe.execute()
        return
    recent = _with_view(store.get(cache_key) or [], label, key)
    if recent is not None:
        store.set(cache_key, recent, timeout=settings.SESSION_COOKIE_AGE)


def _read(store: BaseCache, cache_key: str) -> list[Any]:
    if isinstance(store, RedisCache):
        client, redis_key = _redis(store, cache_key)
        members = client.zrange(redis_key, 0, -1, withscores=True)
        return [[*member.decode().split(" ", 1), seen] for member, seen in members]  # a label has no space
    return list(store.get(cache_key) or [])


def _move(store: BaseCache, old: str, new: str) -> None:
    if isinstance(store, RedisCache):
        client, old_key = _redis(store, old)
        if client.exists(old_key):
            client.rename(old_key, _redis(store, new)[1])
        return
    rows = store.get(old)
    if rows:
        store.set(new, rows, timeout=settings.SESSION_COOKIE_AGE)
        store.delete(old)


def record_view(request: Any, obj: Any) -> None:
    """Remember that this visitor viewed ``obj`` (newest last; a repeat moves it to the end)."""
    session = getattr(request, "session", None)
    if session is None or obj is None or getattr(obj, "pk", None) is None:
        return
    spec = registry.get_spec(type(obj))
    label, key = spec.label, spec.object_key(obj.pk)
    try:
        store = views_cache()
    except Exception as exc:  # an unknown alias (system check similarity.E014): the session keeps them
        logger.warning("recent views: the views cache is unusable (%s); keeping them in the session", exc)
        store = None
    # The key without loading the session (a database SELECT): the cookie's value, as the session
    # middleware read it. None: no session yet, so this view creates one.
    session_key = getattr(session, "session_key", None) if store is not None else None
    # A cache that failed a moment ago (the breaker is open) is not waited on again.
    if store is not None and session_key and not breaker.is_open(_breaker_label()):
        try:
            _add(store, _cache_key(session_key), label, key)
            return
        except Exception as exc:  # a cache that is down or hung must not break or stall the page
            _failed("the session keeps this view", exc)
    recent = _with_view(session.get(SESSION_KEY, []), label, key)
    if recent is not None:
        session[SESSION_KEY] = recent


def recent_views(request_or_session: Any, model: Any = None) -> list[tuple[str, float]]:
    """(object key, epoch seconds) of the visitor's recent views of ``model``, oldest first."""
    session = getattr(request_or_session, "session", request_or_session)
    if session is None:
        return []
    label = registry.get_spec(model).label
    # the key before the session loads: a load that finds no row forgets it
    session_key = getattr(session, "session_key", None)
    rows = list(session.get(SESSION_KEY, [])) if hasattr(session, "get") else []
    if session_key and not breaker.is_open(_breaker_label()):
        try:
            store = views_cache()
            if store is not None:
                rows += _read(store, _cache_key(session_key))
        except Exception as exc:  # the views in the session still count
            _failed("reading the session's only", exc)
    latest: dict[tuple[str, str], float] = {}
    for row_label, key, seen in rows:  # the session's first (older), a repeat moves to its last place
        latest.pop((row_label, key), None)
        latest[(row_label, key)] = seen
    ordered = sorted(latest.items(), key=lambda item: item[1])[-RECENT_VIEWS:]  # stable: ties keep order
    return [(str(key), float(seen)) for (row_label, key), seen in ordered if row_label == label]


def _keep_views_on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """``login()`` gives an anonymous session a new key and keeps its data (``cycle_key``): the
    views move to the new key too. When it empties the session instead (another user was logged
    in), the session has no key yet at this point and the views are not carried over."""
    session = getattr(request, "session", None)
    old = getattr(request, "COOKIES", {}).get(settings.SESSION_COOKIE_NAME)
    new = getattr(session, "session_key", None) if session is not None else None
    if not old or not new or old == new:
        return
    try:
        store = views_cache()
        if store is not None:
            _move(store, _cache_key(old), _cache_key(new))
    except Exception as exc:
        logger.warning("recent views: could not carry the views over the login (%s)", exc)


def _drop_views_on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """``logout()`` empties the session (after this signal): the views in the cache go with it."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if not session_key:
        return
    try:
        store = views_cache()
        if store is not None:
            store.delete(_cache_key(session_key))
    except Exception as exc:  # they expire with SESSION_COOKIE_AGE anyway, and no new session finds them
        logger.warning("recent views: could not drop the views at logout (%s)", exc)


def connect() -> None:
    """From ``SimilarityConfig.ready()``."""
    user_logged_in.connect(_keep_views_on_login, dispatch_uid="similarity.recent_views.login")
    user_logged_out.connect(_drop_views_on_logout, dispatch_uid="similarity.recent_views.logout")


class RecordViewsMiddleware:
    """Records ``request.similarity_viewed`` (set by a product view) once the response is built;
    a page that fails records nothing. The alternative to calling :func:`record_view` in the view.
    """

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        viewed = getattr(request, "similarity_viewed", None)
        if viewed is not None and 200 <= getattr(response, "status_code", 500) < 300:
            record_view(request, viewed)
        return response


def _line(item: Any) -> tuple[Any, int, Decimal | None]:
    """An order line: an object, ``(object, quantity[, price])`` or ``{"object", "quantity", "price"}``."""
    if isinstance(item, dict):
        price = item.get("price")
        return item["object"], int(item.get("quantity", 1)), Decimal(str(price)) if price is not None else None
    if isinstance(item, tuple | list):
        obj, quantity, *rest = (*item, 1) if len(item) == 1 else item
        price = rest[0] if rest else None
        return obj, int(quantity), Decimal(str(price)) if price is not None else None
    return item, 1, None


def record_purchase(
    order_id: Any, items: Iterable[Any], *, visitor: str = "", session: str = "",
    when: datetime | None = None,
) -> int:
    """Record an order: one ``purchase`` event per line. Calling it again for the same order and
    object adds nothing (safe to call from a retried checkout task). Returns the events created.

    ``items``: objects, ``(object, quantity)`` / ``(object, quantity, price)`` tuples, or dicts
    with ``object``, ``quantity`` and ``price``.
    """
    when = when or timezone.now()
    order = str(order_id)
    events = []
    for item in items:
        obj, quantity, price = _line(item)
        spec = registry.get_spec(type(obj))
        object_id = spec.object_key(obj.pk)
        key = hashlib.sha1(
            f"order\x1f{spec.label}\x1f{order}\x1f{object_id}".encode(), usedforsecurity=False
        ).hexdigest()
        events.append(Event(
            model_label=spec.label, object_id=object_id, kind=EventKind.PURCHASE, visitor=str(visitor)[:100],
            session=str(session)[:100], order=order[:100], quantity=quantity,
            price=price.quantize(Decimal("0.01")) if price is not None else None, time=when, key=key,
        ))
    existing = set(Event.objects.filter(key__in=[e.key for e in events]).values_list("key", flat=True))
    fresh = [e for e in events if e.key not in existing]
    Event.objects.bulk_create(fresh, ignore_conflicts=True)
    return len(fresh)
