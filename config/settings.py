"""Django settings for the catalog-similarity project.

With no other environment variables than ``DJANGO_DEBUG=1`` (or a ``DJANGO_SECRET_KEY``) this is
the embedded default: SQLite, Qdrant Edge on disk under ``var/`` and Celery tasks run in-process
right after commit. Production sets ``DATABASE_URL``,
``CELERY_BROKER_URL`` and ``QDRANT_URL``; then the web process only enqueues and Celery workers
encode.

Safe by default: ``DEBUG`` is off unless ``DJANGO_DEBUG=1`` (``make demo`` sets it), and with
``DEBUG`` off a ``DJANGO_SECRET_KEY`` is required and the HTTPS settings are on. Every security
setting can be changed from the environment; docs/deploy.md lists them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured


def env_bool(name: str, default: bool) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off``; unset or empty means the default (compose passes
    an unset variable as an empty string)."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: use 1 or 0.")


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise ImproperlyConfigured(f"{name}={value!r}: use a whole number of seconds.")
    return int(value)


BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# --- Security ------------------------------------------------------------------------------
DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        # The process cannot go on: say why in one line, without a screenful of frames from
        # manage.py, gunicorn or Celery above it.
        sys.tracebacklimit = 0
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set; set it to a long random value (python -c \"import secrets; "
            "print(secrets.token_urlsafe(50))\"), or set DJANGO_DEBUG=1 for local development."
        ) from None  # nor the KeyError manage.py was handling when it first read the settings
    SECRET_KEY = "dev-only-insecure-key-change-me"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else "")
# Only needed for origins other than the site's own (same-origin POSTs pass the check when
# SECURE_PROXY_SSL_HEADER tells Django the request came in over HTTPS).
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# With DEBUG off every HTTPS setting is on; each can be turned off one by one (a trial without
# TLS: DJANGO_SECURE_SSL_REDIRECT=0 ...). HSTS starts at one hour: raise
# DJANGO_SECURE_HSTS_SECONDS to a year once every subdomain is known to serve HTTPS
# (https://docs.djangoproject.com/en/5.2/ref/middleware/#http-strict-transport-security).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # container health checks speak plain HTTP from inside
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", not DEBUG)
# Behind a reverse proxy that terminates TLS, name the header it sets (X-Forwarded-Proto, value
# https; or "Header=value"). Only when the proxy always sets or strips it: a client could send
# it too.
_proxy_header = os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "").strip()
if _proxy_header:
    _name, _, _value = _proxy_header.partition("=")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _name.strip().upper().replace("-", "_"), _value.strip() or "https")

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
    # Static files with far-future cache headers and gzip, straight from gunicorn.
    "whitenoise.middleware.WhiteNoiseMiddleware",
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
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
# Hashed, compressed names need `collectstatic` first, so the manifest storage is on with DEBUG
# off (the Docker image runs collectstatic at build time) and off for runserver and the tests;
# DJANGO_STATIC_MANIFEST=0|1 overrides.
STATIC_MANIFEST = env_bool("DJANGO_STATIC_MANIFEST", not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# With DEBUG off nothing serves /media/ unless this is on: Django's static.serve for a small
# deployment (config/urls.py). Better: let the reverse proxy or object storage serve media.
SERVE_MEDIA = env_bool("DJANGO_SERVE_MEDIA", False)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["REDIS_CACHE_URL"],
        # a hung Redis must not hang pages: the widget caches and the recent views give up
        # after this and carry on without it (docs/deploy.md)
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
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
    # the behaviour model (bought together, recommended) learned again from the day's events
    "similarity-train-behaviour": {
        "task": "similarity.train_behaviour", "schedule": 86400.0, "options": {"queue": "similarity"},
    },
    # the duplicate review queue (docs/staff-tools.md): a nightly scan is enough for listings
    "similarity-duplicates": {"task": "similarity.scan_duplicates", "schedule": 86400.0,
                              "options": {"queue": "similarity"}},
    # the widget beacon's counts, buffered in the cache (Redis), into the admin's CTR table
    "similarity-widget-stats": {"task": "similarity.flush_widget_stats", "schedule": 60.0,
                                "options": {"queue": "similarity", "expires": 60}},
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
