"""The project's Celery application (``celery -A workers worker -Q similarity``).

Configuration comes from Django settings (``CELERY_*``); the tasks are those of the installed
apps, ``similarity.tasks`` among them. Routing: every ``similarity.*`` task goes to the queue
that GPU workers consume (``SIMILARITY_QUEUE``, default ``similarity``).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("catalog_similarity")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_routes = {"similarity.*": {"queue": os.environ.get("SIMILARITY_QUEUE", "similarity")}}
app.autodiscover_tasks()
