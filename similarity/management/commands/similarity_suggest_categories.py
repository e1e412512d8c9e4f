from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from similarity import registry, services
from similarity.exceptions import SimilarityError
from similarity.management.json_output import write_json


class Command(BaseCommand):
    help = (
        "Suggest a category for each product from its nearest neighbours' categories (a similarity-"
        "weighted vote), with a confidence. Writes {key: {category, confidence, alternatives}}."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only-missing", action="store_true", help="only products without a category")
        parser.add_argument("--json", type=Path, help="write the suggestions here (default: print them)")
        parser.add_argument("--apply-above", type=float, default=None,
                            help="also apply suggestions whose confidence is at least this (0-1)")
        parser.add_argument("--model", default=None, help="the spec's model label (default: the only one)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            spec = registry.get_spec(options["model"])
            out: dict[str, Any] = {}
            applied = 0
            for obj, suggestion in services.suggest_categories(spec, only_missing=options["only_missing"]):
                if suggestion is None:
                    continue
                out[spec.lookup_value(obj)] = suggestion.as_dict()
                threshold = options["apply_above"]
                if threshold is not None and suggestion.confidence >= threshold:
                    services.apply_category_suggestion(obj, suggestion)
                    applied += 1
        except SimilarityError as exc:
            raise CommandError(str(exc)) from exc
        except NotImplementedError as exc:
            raise CommandError(f"{exc}: the spec cannot write categories, so --apply-above cannot work") from exc
        write_json(self, out, options["json"], verbosity=options["verbosity"], sort_keys=True,
                   summary=f"wrote {len(out)} suggestions to {options['json']}")
        if options["apply_above"] is not None and options["verbosity"] >= 1:
            self.stdout.write(f"applied {applied} suggestions at confidence >= {options['apply_above']}")
