# The Celery app is loaded with Django, so that the similarity tasks bind to it.
from workers import celery_app

__all__ = ["celery_app"]
