"""Recording what shoppers do: product views in the visitor's session, orders as events.

A view costs a list operation on ``request.session`` (Django's own session, no cookie of ours),
and only when the list changes does the session middleware save the session at the end of the
response: what that costs is the ``SESSION_ENGINE``'s (a database commit by default; well under
a millisecond with signed cookies, about one with the cache engine on Redis; docs/behaviour.md).
``record_purchase`` is the documented API for a shop's checkout.
"""

from __future__ import annotations

import hashlib
import time as clock
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from .. import registry
from .models import Event, EventKind

#: the session key holding the recent views: [[model label, object key, epoch seconds], ...]
SESSION_KEY = "similarity_recent"
#: views kept per session (the oldest go first)
RECENT_VIEWS = 20


def record_view(request: Any, obj: Any) -> None:
    """Remember that this visitor viewed ``obj`` (newest last; a repeat moves it to the end)."""
    session = getattr(request, "session", None)
    if session is None or obj is None or getattr(obj, "pk", None) is None:
        return
    spec = registry.get_spec(type(obj))
    label, key = spec.label, spec.object_key(obj.pk)
    stored = session.get(SESSION_KEY, [])
    if stored and stored[-1][0] == label and stored[-1][1] == key:
        return  # a reload of the newest view: nothing changes, so the session is not saved again
    recent = [row for row in stored if not (row[0] == label and row[1] == key)]
    recent.append([label, key, int(clock.time())])
    session[SESSION_KEY] = recent[-RECENT_VIEWS:]


def recent_views(request_or_session: Any, model: Any = None) -> list[tuple[str, float]]:
    """(object key, epoch seconds) of the visitor's recent views of ``model``, oldest first."""
    session = getattr(request_or_session, "session", request_or_session)
    if session is None:
        return []
    label = registry.get_spec(model).label
    rows = session.get(SESSION_KEY, []) if hasattr(session, "get") else []
    return [(str(key), float(seen)) for row_label, key, seen in rows if row_label == label]


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
