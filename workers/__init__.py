"""Celery tasks and worker start-up: thin adapters over ``similarity.services``."""
