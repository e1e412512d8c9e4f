"""Admin: index state and outbox, a mixin for the indexed model's admin, and two custom pages.

``SimilarityAdminMixin`` gives an indexed model's ``ModelAdmin`` a "Similar products" panel with
the per-modality index state and a "Reindex now" button on the change page, an index-status
filter and a "Reindex selected" action. The "Similarity explorer" (search by words or by photo)
and the index-health page hang off the index-state admin. Every custom view goes through
``admin_site.admin_view`` (staff login) and checks a ``similarity.*`` permission (403 otherwise);
the object views also go through the ``ModelAdmin``'s ``get_object`` (its ``get_queryset``) and
its view/change permission. Index state and the outbox are written by the app only: their admins
show them and allow nothing else.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import admin_views, registry, services
from .admin_staff import StaffToolsAdminMixin
from .models import IndexState, PendingChange, Status

#: permission codenames (declared on ``IndexState.Meta.permissions``)
VIEW_SIMILARITY = "similarity.view_similarity"
VIEW_INDEX_HEALTH = "similarity.view_index_health"
REINDEX = "similarity.reindex_objects"
PANEL_LIMIT = 12


def require_permission(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"You need the permission “{permission}” for this page.")


class IndexStatusFilter(admin.SimpleListFilter):
    """Filter the indexed model's changelist by what the index knows about each object."""

    title = "index status"
    parameter_name = "index_status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("indexed", "Indexed"),
            ("failed", "Failed (any modality)"),
            ("pending", "Pending"),
            ("not_indexed", "Not indexed"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        spec = registry.get_spec(queryset.model)
        states = IndexState.objects.filter(model_label=spec.label)
        value = self.value()
        if value == "indexed":
            return queryset.filter(
                pk__in=spec.pks_of(states.filter(status=Status.INDEXED))
            ).exclude(pk__in=spec.pks_of(states.filter(status=Status.FAILED)))
        if value == "failed":
            return queryset.filter(pk__in=spec.pks_of(states.filter(status=Status.FAILED)))
        if value == "pending":
            outbox = PendingChange.objects.filter(model_label=spec.label, processed_at__isnull=True)
            return queryset.filter(
                Q(pk__in=spec.pks_of(outbox)) | Q(pk__in=spec.pks_of(states.filter(status=Status.PENDING)))
            )
        if value == "not_indexed":
            return queryset.exclude(pk__in=spec.pks_of(states.filter(status=Status.INDEXED)))
        return None


class SimilarityAdminMixin(StaffToolsAdminMixin):
    """Mix into the ``ModelAdmin`` of a model that has a similarity spec (with the staff tools
    of :mod:`similarity.admin_staff`)."""

    change_form_template = "admin/similarity/change_form.html"
    actions = ["reindex_selected", "apply_suggested_category"]
    similar_panel_limit = PANEL_LIMIT

    # -- urls ---------------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta  # type: ignore[attr-defined]
        custom = [
            path(
                "<path:object_id>/reindex/",
                self.admin_site.admin_view(self.reindex_view),  # type: ignore[attr-defined]
                name=f"{opts.app_label}_{opts.model_name}_reindex",
            ),
        ]
        return custom + super().get_urls()  # type: ignore[misc]

    # -- permissions --------------------------------------------------------------------------
    def has_reindex_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(REINDEX))

    # -- change page --------------------------------------------------------------------------
    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        # Only to show the page, and only to whoever may see the object: a save (POST) does not
        # pay for a similarity query, and a refused request (403/404 below) runs none.
        if request.method in ("GET", "HEAD"):
            obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
            if obj is not None and self.has_view_or_change_permission(request, obj):  # type: ignore[attr-defined]
                extra_context.update(self.similarity_context(request, obj))
        return super().change_view(request, object_id, form_url, extra_context)  # type: ignore[misc,no-any-return]

    def similarity_context(self, request: HttpRequest, obj: Any) -> dict[str, Any]:
        opts = self.model._meta  # type: ignore[attr-defined]
        spec = registry.get_spec(self.model)  # type: ignore[attr-defined]
        label, key = spec.label, spec.object_key(obj.pk)
        context: dict[str, Any] = {
            "similarity_panel": request.user.has_perm(VIEW_SIMILARITY),
            "similarity_can_reindex": self.has_reindex_permission(request),
            "similarity_reindex_url": reverse(
                f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_reindex",  # type: ignore[attr-defined]
                args=[quote(obj.pk)],
            ),
            "similarity_states": list(
                IndexState.objects.filter(model_label=label, object_id=key).order_by("modality")
            ),
            "similarity_pending": PendingChange.objects.filter(
                model_label=label, object_id=key, processed_at__isnull=True
            ).exists(),
        }
        if context["similarity_panel"]:
            # Fresh, not the storefront cache: a merchandiser checks what the index says now.
            result = services.find_similar(obj, limit=self.similar_panel_limit)
            context["similarity_result"] = result
            context["similarity_hits"] = [
                {
                    "hit": hit,
                    "title": spec.get_title(hit.object),
                    "change_url": reverse(
                        f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",  # type: ignore[attr-defined]
                        args=[quote(hit.pk)],
                    ),
                }
                for hit in result
            ]
        return context

    # -- reindex ------------------------------------------------------------------------------
    def reindex_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return require_POST(self._reindex)(request, object_id)

    def _reindex(self, request: HttpRequest, object_id: str) -> HttpResponse:
        # Permissions before the lookup, so a refused user learns nothing about which objects exist.
        require_permission(request, REINDEX)
        if not self.has_view_or_change_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        # Through get_object, so the ModelAdmin's get_queryset decides what this user may reach.
        obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if obj is None:
            raise Http404(f"No {self.model._meta.verbose_name} with the key “{object_id}”.")  # type: ignore[attr-defined]
        if not self.has_view_or_change_permission(request, obj):  # type: ignore[attr-defined]
            raise PermissionDenied
        services.capture_changes(self.model, [obj.pk])  # type: ignore[attr-defined]
        self.message_user(request, f"“{obj}” was queued for re-indexing.", messages.SUCCESS)  # type: ignore[attr-defined]
        opts = self.model._meta  # type: ignore[attr-defined]
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",  # type: ignore[attr-defined]
                    args=[quote(obj.pk)])
        )

    @admin.action(description="Reindex selected", permissions=["reindex"])
    def reindex_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        count = services.capture_changes(self.model, queryset.values_list("pk", flat=True))  # type: ignore[attr-defined]
        noun = self.model._meta.verbose_name if count == 1 else self.model._meta.verbose_name_plural  # type: ignore[attr-defined]
        self.message_user(request, f"{count} {noun} queued for re-indexing.", messages.SUCCESS)  # type: ignore[attr-defined]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the app writes itself: shown in the admin, never added, edited or deleted by hand.

    A hand-made index state would claim a vector that is not in the index; an edited or deleted
    outbox row would lose or corrupt a change still to be indexed.
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(IndexState)
class IndexStateAdmin(ReadOnlyAdmin):
    list_display = ["model_label", "object_id", "modality", "status", "model_version", "indexed_at", "error"]
    list_filter = ["status", "modality", "model_label"]
    search_fields = ["object_id", "error"]
    readonly_fields = [f.name for f in IndexState._meta.fields]
    change_list_template = "admin/similarity/indexstate/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        custom = [
            # csrf_exempt only at the door: the explorer installs its upload-size handler and then
            # applies csrf_protect itself, since CSRF middleware would read the body before that.
            path("explorer/", self.admin_site.admin_view(csrf_exempt(self.explorer_view)),
                 name="similarity_explorer"),
            path("health/", self.admin_site.admin_view(self.health_view), name="similarity_health"),
        ]
        return custom + super().get_urls()

    def explorer_view(self, request: HttpRequest) -> HttpResponse:
        require_permission(request, VIEW_SIMILARITY)
        return admin_views.explorer(request, self.admin_site)

    def health_view(self, request: HttpRequest) -> TemplateResponse:
        require_permission(request, VIEW_INDEX_HEALTH)
        return admin_views.health(request, self.admin_site)


@admin.register(PendingChange)
class PendingChangeAdmin(ReadOnlyAdmin):
    list_display = ["model_label", "object_id", "action", "created_at", "processed_at", "attempts"]
    list_filter = ["action", "model_label"]


from .behaviour import admin as _behaviour_admin  # noqa: E402,F401  events, models, widget CTR

__all__ = ["IndexStatusFilter", "SimilarityAdminMixin"]
