from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from similarity import registry, services
from similarity.exceptions import IndexUnavailable, SimilarityError
from similarity.models import PendingChange


class Command(BaseCommand):
    help = (
        "Bring the vector index up to date. --all rebuilds into a new generation and switches "
        "over atomically (resumable); --pending does the changes still in the outbox; --failed "
        "retries what failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--all", action="store_const", dest="mode", const="all")
        mode.add_argument("--pending", action="store_const", dest="mode", const="pending")
        mode.add_argument("--failed", action="store_const", dest="mode", const="failed")
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--enqueue", action="store_true",
                            help="queue Celery tasks instead of encoding in this process")
        parser.add_argument("--restart", action="store_true",
                            help="with --all: ignore an interrupted rebuild and start afresh")
        parser.add_argument("--model", default=None, help="one spec's model label (default: every spec)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            specs = [registry.get_spec(options["model"])] if options["model"] else list(registry.specs().values())
        except SimilarityError as exc:
            raise CommandError(str(exc)) from exc
        for spec in specs:
            self._run(spec, options)

    def _run(self, spec: Any, options: dict[str, Any]) -> None:
        mode = options["mode"] or "pending"
        batch_size = options["batch_size"] or services.get_settings().batch_size
        verbosity = options["verbosity"]
        bar = tqdm(total=self._total(mode, spec), unit="obj", disable=verbosity < 1 or not sys.stderr.isatty())
        started = time.perf_counter()
        try:
            if mode == "all":
                if options["enqueue"]:
                    raise CommandError("--all rebuilds in this process; use --pending --enqueue to queue work")
                report = services.rebuild_index(
                    model=spec, batch_size=batch_size, progress=bar.update, resume=not options["restart"]
                )
            elif mode == "pending":
                report = services.process_pending(
                    model=spec, batch_size=batch_size, enqueue=options["enqueue"], progress=bar.update
                )
            else:
                report = services.IndexReport()
                keys = services.failed_keys(spec)
                for start in range(0, len(keys), batch_size):
                    chunk = keys[start : start + batch_size]
                    if options["enqueue"]:
                        services.dispatch_committed(spec.label, chunk)
                    else:
                        report.merge(services.index_products(chunk, model=spec))
                    bar.update(len(chunk))
        except IndexUnavailable as exc:
            raise CommandError(f"the vector index is unavailable: {exc}") from exc
        except SimilarityError as exc:  # e.g. --enqueue with the broker down
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        elapsed = time.perf_counter() - started
        rate = report.indexed / elapsed if elapsed else 0.0
        self.stdout.write(
            f"{spec.label} {mode}: indexed {report.indexed}, removed {report.removed}, encoded text "
            f"{report.encoded['text']} / image {report.encoded['image']}, failed text "
            f"{report.failed['text']} / image {report.failed['image']} in {elapsed:.1f}s "
            f"({rate:.1f} products/s, batch size {batch_size})."
        )
        if verbosity >= 2:
            for error in report.errors:
                self.stderr.write(f"  {error}")

    @staticmethod
    def _total(mode: str, spec: Any) -> int | None:
        if mode == "all":
            return int(spec.get_queryset().count())
        if mode == "pending":
            return PendingChange.objects.filter(model_label=spec.label, processed_at__isnull=True).count()
        return None
