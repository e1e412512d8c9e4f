from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from similarity import registry, services
from similarity.exceptions import SimilarityError


def _filter_value(text: str) -> Any:
    """``--filter name=value`` values: JSON when it parses (true, 2, [1,2]), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class Command(BaseCommand):
    help = (
        "Print the objects most similar to the one named by VALUE (the spec's lookup field, e.g. "
        "the SKU), with their scores."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("value", help="the value of the spec's lookup_field (e.g. a SKU)")
        parser.add_argument("--limit", type=int, default=10)
        parser.add_argument("--model", default=None, help="the spec's model label (needed with several specs)")
        parser.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE",
                            help="a filter the spec declares, e.g. in_stock=true or same_category=2")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            spec = registry.get_spec(options["model"])
        except SimilarityError as exc:
            raise CommandError(str(exc)) from exc
        try:
            obj = spec.lookup(options["value"])
        except spec.model_class.DoesNotExist:  # type: ignore[attr-defined]
            raise CommandError(f"no {spec.label} has {spec.lookup_field} = {options['value']!r}") from None
        filters: dict[str, Any] = {}
        for item in options["filter"]:
            name, sep, value = item.partition("=")
            if not sep:
                raise CommandError(f"--filter takes NAME=VALUE, not {item!r}")
            filters[name.strip()] = _filter_value(value.strip())
        try:
            result = services.find_similar(obj, limit=options["limit"], **filters)
        except SimilarityError as exc:
            raise CommandError(str(exc)) from exc
        if not result.ok:
            raise CommandError(result.message)
        self.stdout.write(f"Similar to {obj}:")
        self.stdout.write(f"{'#':>3}  {'score':>6}  {'image':>6}  {'text':>6}  object")
        for rank, hit in enumerate(result.hits, start=1):
            image = f"{hit.scores['image']:.3f}" if "image" in hit.scores else "-"
            text = f"{hit.scores['text']:.3f}" if "text" in hit.scores else "-"
            self.stdout.write(f"{rank:>3}  {hit.score:6.3f}  {image:>6}  {text:>6}  {hit.object}")
