from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from similarity import services
from similarity.exceptions import IndexUnavailable, SimilarityError


class Command(BaseCommand):
    help = (
        "Learn light heads on top of the frozen encoders from the catalog's own image–text pairs "
        "(contrastive, no labels) and make them live through a zero-downtime rebuild. "
        "--no-activate only trains; --rollback restores the previous version."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", default=None, help="the spec to train on (default: the only one)")
        parser.add_argument("--no-activate", action="store_true", help="train and store, do not make live")
        parser.add_argument("--rollback", action="store_true",
                            help="make the previously live adapter (or the plain encoders) live again")
        parser.add_argument("--activate", default=None, metavar="VERSION",
                            help="make a stored adapter live (e.g. one trained with --no-activate)")
        parser.add_argument("--text", action="store_true",
                            help="a text head from the catalog's own texts alone (titles, descriptions; "
                                 "for shops without usable images); photos keep the plain image model")
        parser.add_argument("--epochs", type=int, default=None)
        parser.add_argument("--seed", type=int, default=0)
        # Behaviour (docs/behaviour.md): item–item models from the imported events.
        parser.add_argument("--behaviour", action="store_true",
                            help="train the behaviour model (bought together, recommended) and make it live")
        parser.add_argument("--algorithm", choices=("cosine", "ease", "als"), default=None,
                            help="with --behaviour: this algorithm (default: the best on the newest baskets)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["behaviour"]:
            from similarity.behaviour.report import run_training

            return run_training(self, options)
        try:
            if options["rollback"]:
                target = services.rollback_adapter()
                self.stdout.write(f"live now: {target.version if target else 'the plain encoders'}")
                return
            if options["activate"]:
                artifact = services.activate_adapter(options["activate"])
                self.stdout.write(f"live now: {artifact.version}")
                return
            started = time.perf_counter()
            artifact = services.train_adapter(
                options["model"], epochs=options["epochs"], seed=options["seed"], text=options["text"]
            )
            meta = artifact.meta
            trained_on = (f"{meta['views']} texts of {meta['objects']} objects" if meta.get("kind") == "text"
                          else f"{meta['pairs']} image–text pairs")
            self.stdout.write(
                f"trained {artifact.version} on {trained_on}: features "
                f"{meta['feature_seconds']:.1f} s, heads {meta['train_seconds']:.1f} s; label-free fusion "
                f"weights {meta['fusion_weights']}"
            )
            if not options["no_activate"]:
                services.activate_adapter(artifact.version)
                self.stdout.write(f"live now: {artifact.version} ({time.perf_counter() - started:.1f} s in all)")
        except IndexUnavailable as exc:
            raise CommandError(f"the vector index is unavailable: {exc}") from exc
        except SimilarityError as exc:
            raise CommandError(str(exc)) from exc
