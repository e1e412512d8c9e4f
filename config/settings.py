"""Django settings for the catalog-similarity project.

With no environment variables this is the embedded default: SQLite, Qdrant Edge on disk under
``var/`` and Celery tasks run in-process right after commit. Production sets ``DATABASE_URL``,
``CELERY_BROKER_URL`` and ``QDRANT_URL``; then the web process only enqueues and Celery workers
encode.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "similarity",
    "catalog",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}", conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Several threads (runserver) and the in-process indexer share one file.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["REDIS_CACHE_URL"],
    }
    if os.environ.get("REDIS_CACHE_URL")
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

# --- Celery --------------------------------------------------------------------------------
# Without a broker, tasks run eagerly in the committing process (Qdrant Edge allows one
# process to open a shard, so the embedded default keeps everything in one process).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Losing nothing: a task whose worker dies mid-batch goes back to the queue (acks_late +
# reject_on_worker_lost), and a worker killed outright gets its message redelivered after the
# visibility timeout (15 min: well above the longest batch and the longest retry countdown,
# far below kombu's default hour).
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Never hanging a save: connecting to and talking with the broker time out within seconds, and a
# publish is not retried; a failed dispatch leaves the change in the outbox.
CELERY_BROKER_CONNECTION_TIMEOUT = 3
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "max_retries": 1, "interval_start": 0, "interval_step": 0.2,
    "socket_connect_timeout": 3, "socket_timeout": 3, "visibility_timeout": 900,
}
CELERY_TASK_PUBLISH_RETRY = False
# `celery -A workers beat`: compare the index with the database every hour and queue the
# difference (also re-queues outbox rows whose task was lost or ran out of retries).
CELERY_BEAT_SCHEDULE = {
    "similarity-reconcile": {"task": "similarity.reconcile", "schedule": 3600.0, "options": {"queue": "similarity"}},
}

# --- Similarity ----------------------------------------------------------------------------
SIMILARITY = {
    "SPECS": ["catalog.specs.ProductSpec"],
    "INDEX": {
        "BACKEND": (
            "similarity.index.qdrant.QdrantServerIndex"
            if os.environ.get("QDRANT_URL")
            else "similarity.index.edge.QdrantEdgeIndex"
        ),
        "URL": os.environ.get("QDRANT_URL", ""),
        "API_KEY": os.environ.get("QDRANT_API_KEY", ""),
        "PATH": str(VAR_DIR / "qdrant-edge"),
        "COLLECTION": os.environ.get("QDRANT_COLLECTION", "similarity"),
    },
    "DEVICE": os.environ.get("SIMILARITY_DEVICE", "auto"),
    "BATCH_SIZE": int(os.environ.get("SIMILARITY_BATCH_SIZE", "32")),
    "QUEUE": os.environ.get("SIMILARITY_QUEUE", "similarity"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "similarity": {"handlers": ["console"], "level": os.environ.get("SIMILARITY_LOG", "INFO")},
        "workers": {"handlers": ["console"], "level": "INFO"},
    },
}
