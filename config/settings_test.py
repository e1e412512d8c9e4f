"""Test settings: the embedded default, with every path under a throw-away folder.

The environment defaults set here (development mode, a test-only secret key) also reach the
processes some tests start with ``config.settings`` (a shell, a Celery worker, the benchmark),
as they did when ``DEBUG`` defaulted to on. tests/test_deploy.py starts its own with a clean,
production-like environment.
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="catalog-similarity-test-"))
os.environ["DJANGO_DEBUG"] = "1"  # the tests never depend on the caller's shell
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-never-used-outside-the-test-suite")

from .settings import *  # noqa: E402,F403
from .settings import INSTALLED_APPS, SIMILARITY, VAR_DIR  # noqa: E402

# Models with UUID and string primary keys, for the tests of several specs at once.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

MEDIA_ROOT = Path(VAR_DIR) / "media"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SIMILARITY = {**SIMILARITY, "BATCH_SIZE": 16}
LOGGING_CONFIG = None
