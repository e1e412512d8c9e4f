"""Create (or refresh) the demo's admin login and print where to go.

``make demo`` runs this right before ``runserver``. The login comes from ``DEMO_ADMIN_USER`` /
``DEMO_ADMIN_PASSWORD`` when set; otherwise the user is ``admin`` with a fresh random password,
printed here (the demo database is local and throw-away).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Create or refresh a superuser for the demo and print the storefront and admin URLs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=os.environ.get("DEMO_ADMIN_USER", "admin"))
        parser.add_argument("--password", default=os.environ.get("DEMO_ADMIN_PASSWORD", ""),
                            help="default: $DEMO_ADMIN_PASSWORD, else a new random password")
        parser.add_argument("--base-url", default=os.environ.get("DEMO_BASE_URL", "http://127.0.0.1:8000"))

    def handle(self, *args: Any, username: str, password: str, base_url: str, **options: Any) -> None:
        if not username.strip():
            raise CommandError("The demo admin needs a user name: set DEMO_ADMIN_USER or pass --username.")
        password = password or secrets.token_urlsafe(9)
        User = get_user_model()  # noqa: N806 - a class
        user, created = User.objects.get_or_create(
            **{User.USERNAME_FIELD: username}, defaults={"email": f"{username}@example.com"}
        )
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        base = base_url.rstrip("/")
        self.stdout.write(
            f"\n  Storefront:  {base}/\n"
            f"  Admin:       {base}/admin/\n"
            f"  Explorer:    {base}/admin/similarity/indexstate/explorer/\n"
            f"  Login:       {username} / {password}  ({'created' if created else 'password reset'})\n"
        )
