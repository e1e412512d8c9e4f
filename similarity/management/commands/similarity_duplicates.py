from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from similarity import registry, services
from similarity.exceptions import SimilarityError
from similarity.management.json_output import write_json


class Command(BaseCommand):
    help = (
        "Find likely duplicate listings (photo hash, image cosine, title similarity). Writes "
        '[{"sku_a", "sku_b", "score", "reasons"}] (the spec\'s lookup field for "sku").'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--threshold", type=float, default=services.DUPLICATE_THRESHOLD,
                            help=f"report pairs scoring at least this (default {services.DUPLICATE_THRESHOLD})")
        parser.add_argument("--json", type=Path, help="write the pairs here (default: print them)")
        parser.add_argument("--queue", action="store_true", help="also update the admin review queue")
        parser.add_argument("--model", default=None, help="the spec's model label (default: the only one)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 < options["threshold"] <= 1:
            raise CommandError("--threshold takes a score between 0 and 1, e.g. 0.85")
        try:
            spec = registry.get_spec(options["model"])
            quiet = options["verbosity"] < 1 or not sys.stderr.isatty()
            with tqdm(total=spec.get_queryset().count(), unit="products", disable=quiet) as bar:
                pairs = services.find_duplicates(spec, threshold=options["threshold"], progress=bar.update)
            if options["queue"]:
                counts = services.refresh_duplicate_queue(spec, threshold=options["threshold"])
                self.stdout.write(f"review queue: {counts['new']} new, {counts['refreshed']} still open")
        except SimilarityError as exc:
            raise CommandError(str(exc)) from exc
        rows = [pair.as_dict("sku") for pair in pairs]
        write_json(self, rows, options["json"], verbosity=options["verbosity"],
                   summary=f"wrote {len(rows)} pairs to {options['json']} ({spec.lookup_field} values)")
