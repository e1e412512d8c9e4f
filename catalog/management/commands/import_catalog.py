from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from catalog.importer import CatalogFormatError, import_catalog


class Command(BaseCommand):
    help = "Create or update products from a catalog CSV (sku,title,description,brand,category,price,image)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="the CSV file; image paths are relative to its folder")
        parser.add_argument("--batch-size", type=int, default=200,
                            help="rows per transaction (and per indexing batch)")

    def handle(self, *args: Any, path: str, batch_size: int, verbosity: int, **options: Any) -> None:
        bar = tqdm(unit="row", disable=verbosity < 1 or not sys.stderr.isatty())
        try:
            report = import_catalog(path, batch_size=batch_size, progress=bar.update)
        except CatalogFormatError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        self.stdout.write(
            f"Imported {report.imported} products ({report.created} created, {report.updated} updated, "
            f"{report.unchanged} unchanged); {len(report.errors)} rows skipped."
        )
        for number, reason in report.errors:
            self.stderr.write(f"  row {number}: {reason}")
