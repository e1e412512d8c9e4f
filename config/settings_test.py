"""Test settings: the embedded default, with every path under a throw-away folder."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="catalog-similarity-test-"))

from .settings import *  # noqa: E402,F403
from .settings import INSTALLED_APPS, SIMILARITY, VAR_DIR  # noqa: E402

# Models with UUID and string primary keys, for the tests of several specs at once.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

MEDIA_ROOT = Path(VAR_DIR) / "media"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SIMILARITY = {**SIMILARITY, "BATCH_SIZE": 16}
LOGGING_CONFIG = None
