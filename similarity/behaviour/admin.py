"""Admin pages of the behaviour data: events (read-only), trained models, widget CTR."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet, Sum
from django.http import HttpRequest

from .. import services
from .models import BehaviourModel, Event, WidgetStat

logger = logging.getLogger(__name__)


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(_ReadOnly):
    list_display = ["time", "kind", "model_label", "object_id", "order", "visitor", "quantity", "price"]
    list_filter = ["kind", "model_label"]
    search_fields = ["object_id", "order", "visitor"]
    date_hierarchy = "time"
    show_full_result_count = False  # millions of rows: no COUNT(*) per page


@admin.register(BehaviourModel)
class BehaviourModelAdmin(_ReadOnly):
    list_display = ["version", "algorithm", "live", "items", "events", "held_out", "seconds", "created_at"]
    list_filter = ["live", "algorithm", "model_label"]
    readonly_fields = [f.name for f in BehaviourModel._meta.fields]

    @admin.display(description="hit@10 on the newest baskets")
    def held_out(self, obj: BehaviourModel) -> str:
        return ", ".join(f"{name} {values.get('hit@10', 0):.3f}" for name, values in obj.metrics.items()) or "-"


@admin.register(WidgetStat)
class WidgetStatAdmin(_ReadOnly):
    """Impressions, clicks and CTR per widget and placement and day; the totals over the rows
    shown (the filters apply) head the list."""

    list_display = ["day", "widget", "placement", "impressions", "clicks", "ctr_percent"]
    list_filter = ["widget", "placement", "day"]
    date_hierarchy = "day"

    @admin.display(description="CTR", ordering="clicks")
    def ctr_percent(self, obj: WidgetStat) -> str:
        return f"{obj.ctr:.1%}"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        if self.has_view_or_change_permission(request):  # else super() answers 403, nothing moves
            try:  # the counts still in the cache first, so the page is up to the minute
                services.flush_widget_stats()
            except Exception as exc:  # the counts stay in the cache for the periodic flush
                logger.warning("flushing the widget counters failed: %s", exc, exc_info=True)
                self.message_user(request, f"The newest counts could not be read from the cache ({exc}); "
                                  "the figures below may be behind.", messages.WARNING)
        response: Any = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            response.context_data["ctr_totals"] = totals(changelist.queryset)
        return response


def totals(rows: QuerySet[WidgetStat]) -> list[dict[str, Any]]:
    """CTR per widget and placement over ``rows``."""
    out = []
    for row in rows.values("widget", "placement").annotate(i=Sum("impressions"), c=Sum("clicks")).order_by("widget"):
        out.append({**row, "ctr": row["c"] / row["i"] if row["i"] else 0.0})
    return out
