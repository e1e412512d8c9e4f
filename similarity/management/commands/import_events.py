from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from similarity import services
from similarity.behaviour.importer import CANONICAL, EventFormatError, parse_columns, parse_time


class Command(BaseCommand):
    help = (
        "Import shoppers' events from a CSV (canonical header: " + ",".join(CANONICAL) + "). "
        "Only time and sku are required; skus are looked up through the spec's lookup field. "
        "Streamed and idempotent: importing the same file again adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--columns", default="",
                            help="canonical=theirs pairs, e.g. order=invoice,visitor=customer,price=unit_price")
        parser.add_argument("--model", default=None, help="the spec's model label (default: the only one)")
        parser.add_argument("--encoding", default="utf-8")
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument("--until", type=parse_time, default=None,
                            help="leave out rows after this time (ISO 8601), e.g. to keep a later part for evaluation")
        parser.add_argument("--show", type=int, default=20, help="row problems to print (default 20)")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        if not path.is_file():
            raise CommandError(f"{path} is not a file")
        started = time.perf_counter()
        verbose = options["verbosity"] >= 2
        try:
            report = services.import_events(
                path, columns=parse_columns(options["columns"]), model=options["model"],
                encoding=options["encoding"], batch_size=max(1, options["batch_size"]),
                progress=(lambda n: self.stdout.write(f"  {n} rows read")) if verbose else None,
                until=options["until"],
            )
        except (EventFormatError, UnicodeDecodeError) as exc:
            raise CommandError(str(exc)) from exc
        seconds = time.perf_counter() - started
        for number, problem in report.problems[: options["show"]]:
            self.stderr.write(f"row {number}: {problem}")
        hidden = report.unknown_skus + report.bad_rows - min(options["show"], len(report.problems))
        if hidden > 0:
            self.stderr.write(f"... and {hidden} more row problems")
        self.stdout.write(
            f"{report.rows} rows in {seconds:.1f} s ({report.rows / max(seconds, 1e-9):.0f} rows/s): "
            f"{report.created} new events, {report.existing} already there, "
            f"{report.unknown_skus} unknown skus, {report.bad_rows} bad rows"
            + (f", {report.later} after --until" if report.later else "")
        )
