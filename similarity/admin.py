from __future__ import annotations

from django.contrib import admin

from .models import IndexState, PendingChange


@admin.register(IndexState)
class IndexStateAdmin(admin.ModelAdmin):
    list_display = ["model_label", "object_id", "modality", "status", "model_version", "indexed_at", "error"]
    list_filter = ["status", "modality", "model_label"]
    search_fields = ["object_id", "error"]
    readonly_fields = [f.name for f in IndexState._meta.fields]


@admin.register(PendingChange)
class PendingChangeAdmin(admin.ModelAdmin):
    list_display = ["model_label", "object_id", "action", "created_at", "processed_at", "attempts"]
    list_filter = ["action", "model_label"]
