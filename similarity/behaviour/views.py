"""The widget analytics beacon: ``POST <similarity urls>beacon?w=WIDGET&p=PLACEMENT&e=i|c``.

Sent by the widget's few lines of script (``navigator.sendBeacon``), after the page: the page
itself stays cacheable and pays nothing. The hit is a counter ``incr`` in the cache, flushed into
the database later (:mod:`.analytics`; one UPDATE of the day's row where the cache is per
process); no cookie, no session, no body.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .analytics import EVENTS, count

WIDGETS = frozenset({"bought_together", "bought_together_cart", "recommended_for_you", "trending", "similar"})


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
