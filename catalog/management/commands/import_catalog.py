"""``manage.py import_catalog PATH.csv``: exit status 0 when every row imported cleanly, 1 when some
rows were skipped or imported with a warning, 2 when the file itself could not be imported."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from catalog.importer import (
    MAX_IMAGE_BYTES,
    CatalogEncodingError,
    CatalogFormatError,
    ImportReport,
    import_catalog,
)

EXIT_ROW_PROBLEMS = 1
EXIT_FILE_PROBLEM = 2


class Command(BaseCommand):
    help = "Create or update products from a catalog CSV (sku,title,description,brand,category,price,image)."

    #: set by handle(); run_from_argv() exits with it (call_command() callers can read it)
    exit_code = 0

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="the CSV file; image paths are relative to its folder")
        parser.add_argument("--batch-size", type=int, default=200,
                            help="rows per transaction (and per indexing batch)")
        parser.add_argument("--encoding", default="utf-8",
                            help="the file's text encoding, e.g. latin-1 or cp1252 (default: UTF-8, with or "
                                 "without BOM)")
        parser.add_argument("--image-root", action="append", default=[], dest="image_roots", metavar="DIR",
                            help="another folder images may be read from (repeatable); by default only the "
                                 "CSV's folder")
        parser.add_argument("--categorise-above", type=float, default=None, metavar="CONFIDENCE",
                            help="after the import, give each product without a category the one its "
                                 "nearest neighbours suggest, when their confidence is at least this (0-1)")
        parser.add_argument("--max-image-bytes", type=int, default=MAX_IMAGE_BYTES,
                            help=f"skip image files larger than this (default {MAX_IMAGE_BYTES})")

    def run_from_argv(self, argv: list[str]) -> None:
        super().run_from_argv(argv)
        if self.exit_code:
            sys.exit(self.exit_code)

    def handle(self, *args: Any, path: str, batch_size: int, encoding: str, image_roots: list[str],
               max_image_bytes: int, verbosity: int, **options: Any) -> None:
        _check_options(batch_size, image_roots, max_image_bytes)
        bar = tqdm(unit="row", disable=verbosity < 1 or not sys.stderr.isatty())
        try:
            report = import_catalog(path, batch_size=batch_size, encoding=encoding, image_roots=image_roots,
                                    max_image_bytes=max_image_bytes, progress=bar.update)
        except CatalogEncodingError as exc:
            raise CommandError(f"{exc}. Pass --encoding with the file's encoding "
                               "(for example --encoding cp1252 or --encoding latin-1).",
                               returncode=EXIT_FILE_PROBLEM) from exc
        except CatalogFormatError as exc:
            raise CommandError(str(exc), returncode=EXIT_FILE_PROBLEM) from exc
        finally:
            bar.close()
        self._write_report(report, verbosity)
        if options.get("categorise_above") is not None:
            self._categorise(options["categorise_above"], verbosity)
        self.exit_code = 0 if report.clean else EXIT_ROW_PROBLEMS

    def _categorise(self, threshold: float, verbosity: int) -> None:
        """Suggested categories (similarity.categories) for the products imported without one."""
        from similarity import services

        applied = skipped = 0
        for obj, suggestion in services.suggest_categories(only_missing=True):
            if suggestion is not None and suggestion.confidence >= threshold:
                services.apply_category_suggestion(obj, suggestion)
                applied += 1
            else:
                skipped += 1
        if verbosity >= 1:
            self.stdout.write(f"categorised {applied} products without a category at confidence >= {threshold}; "
                              f"{skipped} left without one (not indexed yet, or no confident suggestion)")

    def _write_report(self, report: ImportReport, verbosity: int) -> None:
        if verbosity >= 1:
            warnings = len(report.warnings)
            self.stdout.write(
                f"Imported {report.imported} products ({report.created} created, {report.updated} updated, "
                f"{report.unchanged} unchanged); {len(report.errors)} rows skipped; "
                f"{warnings} warning{'' if warnings == 1 else 's'}."
            )
        if report.errors:
            self.stderr.write("Rows skipped:")
            for number, reason in sorted(report.errors):
                self.stderr.write(f"  row {number}: {reason}")
        if report.warnings:
            self.stderr.write("Rows imported with a warning:")
            for number, problem in sorted(report.warnings):
                self.stderr.write(f"  row {number}: {problem}")


def _check_options(batch_size: int, image_roots: list[str], max_image_bytes: int) -> None:
    if batch_size < 1:
        raise CommandError("--batch-size must be at least 1.", returncode=EXIT_FILE_PROBLEM)
    if max_image_bytes < 1:
        raise CommandError("--max-image-bytes must be at least 1.", returncode=EXIT_FILE_PROBLEM)
    for root in image_roots:
        if not Path(root).is_dir():
            raise CommandError(f"--image-root {root} is not a folder.", returncode=EXIT_FILE_PROBLEM)
