"""``similarity_evaluate --task basket|next-item``: run the behaviour evaluation and print it."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from .evaluation import EvaluationError, evaluate_basket, evaluate_next_item
from .importer import EventFormatError, parse_columns, parse_time


def run_task(command: BaseCommand, options: dict[str, Any]) -> None:
    path = options["events"]
    if path is None or not path.is_file():
        raise CommandError("--task needs --events FILE (a CSV of events that were not imported)")
    k = max(options["k"])
    started = time.perf_counter()
    try:
        since = parse_time(options["since"]) if options["since"] else None
        kwargs: dict[str, Any] = {"columns": parse_columns(options["columns"]), "k": k, "seed": options["seed"],
                                  "since": since, "model": options["model"]}
        if options["task"] == "basket":
            metrics = evaluate_basket(path, max_cases=options["sample"], **kwargs)
        else:
            if options["sample"]:
                kwargs["max_positions"] = options["sample"]
            metrics = evaluate_next_item(path, **kwargs)
    except (EvaluationError, EventFormatError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    seconds = time.perf_counter() - started
    command.stdout.write(f"{options['task']} on {path.name} (k={k}, seed={options['seed']}, {seconds:.0f} s):")
    command.stdout.write(f"{'ranking':<22}{'hit@' + str(k):>10}{'mrr':>10}")
    ranked = sorted(metrics.items(), key=lambda kv: -kv[1][f"hit@{k}"])
    for name, values in ranked:
        interval = values.get("ci95", {}).get(f"hit@{k}")
        command.stdout.write(f"{name:<22}{values[f'hit@{k}']:>10.4f}{values['mrr']:>10.4f}"
                             + (f"   hit@{k} 95% CI [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""))
    served = "bought_together" if options["task"] == "basket" else "recommended_for_you"
    paired = [(name, values["served_minus_this"]) for name, values in ranked if "served_minus_this" in values]
    if paired:
        command.stdout.write(f"{served} minus each ranking, paired, 95% CI (bootstrap, seed {options['seed']}, "
                             f"{'orders' if options['task'] == 'basket' else 'sessions'} resampled):")
        for name, diff in paired:
            hit, mrr = diff[f"hit@{k}"], diff["mrr"]
            command.stdout.write(f"  − {name:<20} hit@{k} {hit[0]:+.4f} [{hit[1]:+.4f}, {hit[2]:+.4f}]"
                                 f"   mrr {mrr[0]:+.4f} [{mrr[1]:+.4f}, {mrr[2]:+.4f}]")
    if options["json"]:
        options["json"].parent.mkdir(parents=True, exist_ok=True)
        options["json"].write_text(json.dumps(metrics, indent=2, sort_keys=True))


def run_training(command: BaseCommand, options: dict[str, Any]) -> None:
    """``similarity_train --behaviour``: train, make live (unless ``--no-activate``), report."""
    from .. import services
    from ..exceptions import IndexUnavailable
    from .train import NoEvents

    try:
        row = services.train_behaviour(
            options["model"], algorithm=options["algorithm"], seed=options["seed"],
            activate=not options["no_activate"],
        )
    except (NoEvents, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    except IndexUnavailable as exc:
        raise CommandError(f"the vector index is unavailable: {exc}") from exc
    for name, values in row.metrics.items():
        command.stdout.write(
            f"  {name:<8} on the newest baskets: hit@10 {values['hit@10']:.4f}, mrr {values['mrr']:.4f}"
        )
    command.stdout.write(mix_line(row.params))
    state = "live now" if row.live else "stored (not live)"
    command.stdout.write(
        f"{state}: {row.version} ({row.algorithm}, {row.items} items from {row.events} events, {row.seconds:.1f} s)"
    )


def mix_line(params: dict[str, Any]) -> str:
    """The recent-views mix a training chose (``params["recent_views"]``), as one line."""
    chosen = params.get("recent_views") or {}
    if "cooccurrence" not in chosen:  # a model trained before the mix was chosen
        return "recent views: the default mix (this model stores none)"
    mix = f"recent views: bought-together weight {chosen['cooccurrence']:g}, recency {chosen['recency']:g}"
    hit = next((key for key in chosen if key.startswith("hit@")), None)
    if hit is None or not chosen.get("positions"):
        return f"{mix} (the defaults: too little held-out data to choose a mix)"
    return (f"{mix} ({hit} {chosen[hit]:.4f}, mrr {chosen['mrr']:.4f} on {chosen['positions']} held-out "
            f"next items after the newest baskets' cut; best of {len(chosen.get('grid', {}))} mixes)")
