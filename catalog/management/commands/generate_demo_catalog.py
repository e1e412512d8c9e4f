from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from catalog.demo import generate


class Command(BaseCommand):
    help = "Write a small generated catalog (CSV + images) for the demo when no data set is around."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("folder")
        parser.add_argument("--per-family", type=int, default=12)

    def handle(self, *args: Any, folder: str, per_family: int, **options: Any) -> None:
        path = generate(Path(folder), per_family=per_family)
        self.stdout.write(f"Wrote {path}")
