from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from similarity import registry, services


class Command(BaseCommand):
    help = "Print the products most similar to the one with the given SKU, with their scores."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("sku")
        parser.add_argument("--limit", type=int, default=10)
        parser.add_argument("--same-category", nargs="?", type=int, const=-1, default=None,
                            metavar="LEVEL", help="only the same category (at depth LEVEL if given)")
        parser.add_argument("--in-stock", action="store_true", help="only products in stock")
        parser.add_argument("--brand", help="only this brand")

    def handle(self, *args: Any, **options: Any) -> None:
        spec = next(iter(registry.specs().values()))
        try:
            product = spec.get_queryset().get(sku=options["sku"])
        except spec.model_class.DoesNotExist:
            raise CommandError(f"no product has the SKU {options['sku']!r}") from None
        level = options["same_category"]
        result = services.find_similar(
            product, limit=options["limit"], in_stock=options["in_stock"], brand=options["brand"],
            same_category=(True if level == -1 else level),
        )
        if not result.ok:
            raise CommandError(result.message)
        self.stdout.write(f"Similar to {product}:")
        self.stdout.write(f"{'#':>3}  {'score':>6}  {'image':>6}  {'text':>6}  product")
        for rank, hit in enumerate(result.hits, start=1):
            image = f"{hit.scores['image']:.3f}" if "image" in hit.scores else "-"
            text = f"{hit.scores['text']:.3f}" if "text" in hit.scores else "-"
            self.stdout.write(f"{rank:>3}  {hit.score:6.3f}  {image:>6}  {text:>6}  {hit.object}")
