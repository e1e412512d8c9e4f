"""Project glue for Celery: the app and its routing (``workers.celery``). The tasks are the
reusable app's own (``similarity.tasks``)."""

from .celery import app as celery_app

__all__ = ["celery_app"]
