"""The widget analytics beacon: ``POST <similarity urls>beacon?w=WIDGET&p=PLACEMENT&e=i|c``.

Sent by the widget's few lines of script (``navigator.sendBeacon``), after the page: the page
itself stays cacheable and pays nothing. One UPDATE of a per-day counter row (an INSERT the
first time of the day); no cookie, no session, no body.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import WidgetStat

WIDGETS = frozenset({"bought_together", "bought_together_cart", "recommended_for_you", "trending", "similar"})
EVENTS = {"i": "impressions", "c": "clicks"}


def count(widget: str, placement: str, event: str) -> None:
    """Add one impression (``event="i"``) or click (``"c"``) to today's counter."""
    column = EVENTS[event]
    day = timezone.now().date()
    rows = WidgetStat.objects.filter(widget=widget, placement=placement, day=day)
    if rows.update(**{column: F(column) + 1}):
        return
    try:
        with transaction.atomic():
            WidgetStat.objects.create(widget=widget, placement=placement, day=day, **{column: 1})
    except IntegrityError:  # another request created today's row first
        rows.update(**{column: F(column) + 1})


@csrf_exempt  # sendBeacon carries no token; the view only increments counters
@require_POST
def beacon(request: HttpRequest) -> HttpResponse:
    widget = request.GET.get("w", "")
    placement = request.GET.get("p", "")[:60]
    event = request.GET.get("e", "")
    if widget not in WIDGETS or event not in EVENTS:
        return HttpResponseBadRequest("unknown widget or event")
    count(widget, placement, event)
    response = HttpResponse(status=204)
    response["Cache-Control"] = "no-store"
    return response
