from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from similarity import registry, services
from similarity.exceptions import IndexUnavailable, SimilarityError
from similarity.reconcile import KINDS


class Command(BaseCommand):
    help = (
        "Compare the database with the live vector index: missing points, ghost points, stale text "
        "or image hashes, stale payload and old model versions. --check (the default) exits 1 on any "
        "drift; --fix queues the drifted objects through the normal indexing tasks."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--check", action="store_true", help="report, exit 1 on drift (default)")
        mode.add_argument("--fix", action="store_true", help="queue every drifted object for repair")
        parser.add_argument("--json", type=Path, help="write the drift (keys per kind) to this file")
        parser.add_argument("--model", default=None, help="one spec's model label (default: every spec)")
        parser.add_argument("--batch-size", type=int, default=256)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            specs = [registry.get_spec(options["model"])] if options["model"] else list(registry.specs().values())
            drifts = [services.reconcile(spec, fix=options["fix"], batch_size=options["batch_size"]) for spec in specs]
        except IndexUnavailable as exc:
            raise CommandError(f"the vector index is unavailable: {exc}") from exc
        except SimilarityError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{'model':<24} {'objects':>8} {'points':>8} " + " ".join(f"{k:>13}" for k in KINDS)
                          + f" {'seconds':>8}")
        for drift in drifts:
            counts = drift.counts()
            self.stdout.write(f"{drift.model:<24} {drift.checked:>8} {drift.points:>8} "
                              + " ".join(f"{counts[k]:>13}" for k in KINDS) + f" {drift.seconds:>8.2f}")
        total = sum(d.total for d in drifts)
        if options["json"]:
            options["json"].write_text(json.dumps([d.as_dict() for d in drifts], indent=2) + "\n")
        if total and options["fix"]:
            self.stdout.write(f"{total} objects queued for repair.")
        elif total:
            raise CommandError(f"{total} objects differ from the index; run with --fix to repair.", returncode=1)
        else:
            self.stdout.write("No drift: the index matches the database.")
