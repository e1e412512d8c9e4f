from __future__ import annotations

from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    verbose_name = "Similarity"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # checks: registers system checks; merchandising: a pin/block/rule change bumps the cache version
        from . import checks, merchandising, signals  # noqa: F401

        signals.connect()
        from .behaviour import recording

        recording.connect()  # the recent views follow a login, and go at logout
