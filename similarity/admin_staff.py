"""Admin for the staff tools: the change page's suggestion, duplicate warning, "why" and
merchandising (drag to pin, one click to block), the duplicate review queue and the rules.

:class:`StaffToolsAdminMixin` is a base of :class:`similarity.admin.SimilarityAdminMixin`, so
every indexed model's admin gets it. Its views go through ``admin_site.admin_view``, take POST
only, and need the change permission of the model (merchandising changes what shoppers see).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from . import registry, services
from .staff_models import Block, DuplicateCandidate, MerchandisingRule, Pin


class StaffToolsAdminMixin:
    """Category suggestion, duplicate warning and merchandising on an indexed model's admin."""

    # -- urls ---------------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta  # type: ignore[attr-defined]
        custom = [
            path(
                "<path:object_id>/merchandising/",
                self.admin_site.admin_view(self.merchandising_view),  # type: ignore[attr-defined]
                name=f"{opts.app_label}_{opts.model_name}_merchandising",
            ),
        ]
        return custom + super().get_urls()  # type: ignore[misc,no-any-return]

    # -- change page --------------------------------------------------------------------------
    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        if request.method in ("GET", "HEAD") and extra_context.get("similarity_panel"):
            obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
            if obj is not None:
                extra_context.update(self.staff_tools_context(request, obj, extra_context))
        return super().change_view(request, object_id, form_url, extra_context)  # type: ignore[misc,no-any-return]

    def staff_tools_context(self, request: HttpRequest, obj: Any, context: dict[str, Any]) -> dict[str, Any]:
        spec = registry.get_spec(self.model)  # type: ignore[attr-defined]
        opts = self.model._meta  # type: ignore[attr-defined]
        out: dict[str, Any] = {
            "similarity_suggestion": services.suggest_category(obj),
            "similarity_taxonomy": " > ".join(spec.get_taxonomy(obj)),
            "similarity_duplicates": [
                {"row": row, "other": row.name_b if row.object_a == spec.object_key(obj.pk) else row.name_a}
                for row in services.possible_duplicates(obj)
            ],
            "similarity_can_merchandise": self.has_change_permission(request, obj),  # type: ignore[attr-defined]
            "similarity_merchandising_url": reverse(
                f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_merchandising",  # type: ignore[attr-defined]
                args=[quote(obj.pk)],
            ),
        }
        decisions = services.merchandising_decisions(spec, obj.pk)
        pinned = {p.pk for p in decisions["pinned"]}
        out["similarity_blocked"] = decisions["blocked"]
        rows = context.get("similarity_hits") or []
        result = context.get("similarity_result")
        if rows and result is not None:
            for row, why in zip(rows, services.explain_hits(obj, list(result)), strict=True):
                row["why"] = why
                row["pinned"] = row["hit"].pk in pinned
        return out

    # -- merchandising ------------------------------------------------------------------------
    def merchandising_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return require_POST(self._merchandise)(request, object_id)

    def _merchandise(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_change_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if obj is None:
            raise Http404(f"No {self.model._meta.verbose_name} with the key “{object_id}”.")  # type: ignore[attr-defined]
        if not self.has_change_permission(request, obj):  # type: ignore[attr-defined]
            raise PermissionDenied
        spec = registry.get_spec(self.model)  # type: ignore[attr-defined]
        action, target_key = request.POST.get("action", ""), request.POST.get("target", "")
        try:
            target = spec.get_queryset().get(pk=spec.to_pk(target_key))
        except Exception:
            raise Http404("No such object to pin or block.") from None
        if action == "pin":
            position = request.POST.get("position")
            services.pin_hit(spec, obj.pk, target.pk, int(position) if position not in (None, "") else None)
            message = f"“{spec.get_title(target)}” is pinned."
        elif action == "block":
            services.block_hit(spec, obj.pk, target.pk)
            message = f"“{spec.get_title(target)}” will not be shown with this one."
        elif action == "clear":
            services.clear_hit(spec, obj.pk, target.pk)
            message = f"“{spec.get_title(target)}” is no longer pinned or blocked."
        else:
            return JsonResponse({"error": "action must be pin, block or clear"}, status=400)
        if request.headers.get("accept", "").startswith("application/json"):
            return JsonResponse({"ok": True, "message": message})
        self.message_user(request, message, messages.SUCCESS)  # type: ignore[attr-defined]
        opts = self.model._meta  # type: ignore[attr-defined]
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",  # type: ignore[attr-defined]
                    args=[quote(obj.pk)]) + "#similarity-panel"
        )

    # -- actions ------------------------------------------------------------------------------
    @admin.action(description="Apply the suggested category", permissions=["change"])
    def apply_suggested_category(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        applied, skipped = 0, 0
        for obj in queryset:
            suggestion = services.suggest_category(obj)
            if suggestion is None or not suggestion.path:
                skipped += 1
                continue
            try:
                services.apply_category_suggestion(obj, suggestion)
            except NotImplementedError:
                self.message_user(request, "This model's spec cannot write categories (apply_category).",  # type: ignore[attr-defined]
                                  messages.ERROR)
                return
            applied += 1
        self.message_user(  # type: ignore[attr-defined]
            request, f"Applied the suggested category to {applied}; {skipped} had no suggestion.", messages.SUCCESS
        )


@admin.register(DuplicateCandidate)
class DuplicateCandidateAdmin(admin.ModelAdmin):
    """The review queue: the periodic task fills it; staff confirm, dismiss or link as variants."""

    list_display = ["name_a", "name_b", "score", "reasons_text", "decision", "found_at"]
    list_filter = ["decision", "model_label"]
    search_fields = ["name_a", "name_b"]
    readonly_fields = ["model_label", "object_a", "object_b", "name_a", "name_b", "score", "reasons", "found_at",
                       "decided_at"]
    actions = ["confirm", "dismiss", "link_as_variants"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="reasons")
    def reasons_text(self, row: DuplicateCandidate) -> str:
        return "; ".join(row.reasons)

    def _decide(self, request: HttpRequest, queryset: QuerySet[DuplicateCandidate], decision: str) -> None:
        done = 0
        for row in queryset:
            try:
                services.decide_duplicate(row, decision)
                done += 1
            except (ValueError, NotImplementedError) as exc:
                self.message_user(request, f"{row}: {exc}", messages.ERROR)
        self.message_user(request, f"{done} pairs marked “{DuplicateCandidate.Decision(decision).label}”.",
                          messages.SUCCESS)

    @admin.action(description="Confirm: duplicates", permissions=["change"])
    def confirm(self, request: HttpRequest, queryset: QuerySet[DuplicateCandidate]) -> None:
        self._decide(request, queryset, DuplicateCandidate.Decision.CONFIRMED)

    @admin.action(description="Dismiss: not duplicates (never shown again)", permissions=["change"])
    def dismiss(self, request: HttpRequest, queryset: QuerySet[DuplicateCandidate]) -> None:
        self._decide(request, queryset, DuplicateCandidate.Decision.DISMISSED)

    @admin.action(description="Link as variants (the second becomes a variant of the first)", permissions=["change"])
    def link_as_variants(self, request: HttpRequest, queryset: QuerySet[DuplicateCandidate]) -> None:
        self._decide(request, queryset, DuplicateCandidate.Decision.VARIANTS)


@admin.register(MerchandisingRule)
class MerchandisingRuleAdmin(admin.ModelAdmin):
    list_display = ["__str__", "model_label", "kind", "active"]
    list_filter = ["kind", "active", "model_label"]


@admin.register(Pin)
class PinAdmin(admin.ModelAdmin):
    list_display = ["model_label", "source", "target", "position"]
    list_filter = ["model_label"]


@admin.register(Block)
class BlockAdmin(admin.ModelAdmin):
    list_display = ["model_label", "source", "target"]
    list_filter = ["model_label"]
