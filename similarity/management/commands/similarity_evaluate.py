from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from similarity import evaluation
from similarity.exceptions import IndexUnavailable


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise CommandError(f"--k takes numbers separated by commas, not {text!r}") from None
    if not ks or ks[0] < 1:
        raise CommandError("--k values must be 1 or more")
    return ks


class Command(BaseCommand):
    help = (
        "Measure the quality of similar products on the indexed catalog: precision@k, recall@k, "
        "nDCG@k, MRR and hit-rate@1 for the image, text, fused and lexical (TF-IDF) rankings."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--level", type=int, default=None,
                            help="relevant = same category ancestor at this depth (1 = top level; default 2)")
        source.add_argument("--labels", type=Path, help="CSV sku,label: relevant = same label")
        source.add_argument("--judgments", type=Path, help="CSV sku_a,sku_b,relevance (graded, 0 = not)")
        parser.add_argument("--queries", type=Path,
                            help="CSV image,sku, text,sku or text,label (with --labels): photo/typed search")
        parser.add_argument("--k", type=_ks, default=evaluation.DEFAULT_KS, help="cut-offs, e.g. 1,5,10")
        parser.add_argument("--rankings", default=",".join(evaluation.RANKINGS),
                            help="comma-separated subset of image,text,fused,lexical")
        parser.add_argument("--sample", type=int, default=None, help="evaluate N random query products")
        parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
        parser.add_argument("--normalisation", choices=("none", "zscore"), default=None,
                            help="fusion score normalisation (default: the one find_similar uses)")
        parser.add_argument("--sweep-weights", action="store_true",
                            help="try image weights 0, 0.05, ... 1 (text = 1 - image) and print the best")
        parser.add_argument("--sweep-steps", type=int, default=20)
        parser.add_argument("--optimise", default=None,
                            help="metric the sweep maximises (default: precision at the largest k)")
        parser.add_argument("--write-settings", type=Path,
                            help="with --sweep-weights: write the best weights (.json or .py snippet)")
        parser.add_argument("--by-category", action="store_true",
                            help="also print precision at the largest k per top-level category")
        parser.add_argument("--json", type=Path, help="write {ranking: {metric@k: value}} here")
        parser.add_argument("--plots", type=Path, help="write PNG plots into this folder")
        parser.add_argument("--model", default=None, help="the spec's model label (default: the first)")
        # Behaviour (docs/behaviour.md): score bought-together / recommended on events not imported.
        # Staff tools (docs/staff-tools.md): categories = suggest hidden categories back;
        # duplicates = find planted copies (--planted).
        parser.add_argument("--task", choices=("basket", "next-item", "categories", "duplicates"), default=None,
                            help="evaluate the behaviour widgets on --events instead of similar products")
        parser.add_argument("--events", type=Path, help="with --task: a CSV of events that were not imported")
        parser.add_argument("--columns", default="", help="with --task: canonical=theirs column names")
        parser.add_argument("--since", default=None, help="with --task: only events at or after this time")
        parser.add_argument("--compare-untrained", action="store_true",
                            help="also rank with the plain encoders (no trained adapter), in the same run")
        parser.add_argument("--cross-split", action="store_true",
                            help="choose the fusion rule on one half of the top-level categories, report on the other; "
                                 "with --queries: each half's typed queries on its own products")
        parser.add_argument("--hide", type=float, default=0.2, help="--task categories: share of categories hidden")
        parser.add_argument("--neighbours", type=int, default=None,
                            help="--task categories: neighbours that vote (default: the suggestion's)")
        parser.add_argument("--classifier-weight", type=float, default=None,
                            help="--task categories: the classifier's blend weight (0: the vote alone; "
                                 "default: the suggestion's)")
        parser.add_argument("--planted", type=Path, help="--task duplicates: CSV sku_a,sku_b of planted copies")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["task"] in ("categories", "duplicates"):
            from similarity.evaluation.staff_tasks import run_task as run_staff_task

            try:
                metrics = run_staff_task(self, options)
            except (evaluation.EvaluationError, IndexUnavailable) as exc:
                raise CommandError(str(exc)) from exc
            self._write_json(options["json"], metrics)
            return
        if options["task"]:
            from similarity.behaviour.report import run_task

            return run_task(self, options)
        ks = options["k"]
        rankings = [r.strip() for r in options["rankings"].split(",") if r.strip()]
        unknown = set(rankings) - set(evaluation.RANKINGS)
        if unknown:
            raise CommandError(
                f"unknown rankings {sorted(unknown)}; choose from {', '.join(evaluation.RANKINGS)}"
            )
        try:
            catalog = evaluation.load_catalog(options["model"])
        except IndexUnavailable as exc:
            raise CommandError(f"the vector index is unavailable: {exc}") from exc
        except evaluation.EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        have = {m: int(catalog.present[m].sum()) for m in ("image", "text")}
        self._say(1, f"{len(catalog)} indexed products; image vectors for {have['image']}, "
                     f"text vectors for {have['text']}.")

        try:
            if options["queries"]:
                from similarity.evaluation.joint import query_tables

                metrics = query_tables(catalog, options, ks, rankings)
                self._table(metrics, ks, f"queries in {options['queries'].name}")
                self._write_json(options["json"], metrics)
                return
            relevance = self._relevance(catalog, options)
            queries = evaluation.sample_queries(
                relevance.query_candidates(len(catalog)), options["sample"], options["seed"]
            )
            self._warn_leak(catalog, relevance, queries)
            result = evaluation.evaluate(
                catalog, relevance, queries=queries, rankings=rankings, ks=ks,
                normalisation=options["normalisation"],
            )
            if options["compare_untrained"]:
                from similarity.evaluation.joint import add_untrained

                add_untrained(result, catalog, relevance, queries, rankings, ks, options["normalisation"])
        except evaluation.EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        self._table(result.metrics, ks, f"{relevance.name}, {len(queries)} queries")
        if options["by_category"]:
            metric = f"precision@{max(ks)}"
            self._table(result.by_group(catalog, metric), (), f"{metric} per top-level category",
                        columns=list(result.metrics), label="category")
        if options["cross_split"]:
            from similarity.evaluation.cross_split import cross_split_lines

            self.stdout.write("\n".join(cross_split_lines(catalog, relevance, ks,
                                                          compare_untrained=options["compare_untrained"])))
        sweep = self._sweep(catalog, relevance, queries, ks, options) if options["sweep_weights"] else None
        self._write_json(options["json"], result.metrics)
        if options["plots"]:
            written = evaluation.write_plots(
                catalog, result, relevance, options["plots"], sweep=sweep,
                sweep_metric=options["optimise"] or f"precision@{max(ks)}", seed=options["seed"],
            )
            for path in written:
                self._say(1, f"wrote {path}")

    # -- pieces -----------------------------------------------------------------------------
    def _relevance(self, catalog: evaluation.EvalCatalog, options: dict[str, Any]) -> evaluation.Relevance:
        if options["labels"]:
            return evaluation.labels_relevance(catalog, options["labels"])
        if options["judgments"]:
            return evaluation.judgments_relevance(catalog, options["judgments"])
        return evaluation.category_relevance(catalog, options["level"] or 2)

    def _warn_leak(
        self, catalog: evaluation.EvalCatalog, relevance: evaluation.Relevance, queries: Any
    ) -> None:
        share = evaluation.label_leak(catalog, relevance, queries)
        if catalog.spec.text_includes_taxonomy:
            self.stderr.write(self.style.WARNING(
                "Warning: the spec puts the taxonomy (category path) into the encoded text, so the text, fused "
                "and lexical rankings see the answer they are judged by; evaluate with a spec "
                "without it (or with --labels) for an honest number."
            ))
        elif share > 0.25:
            self.stderr.write(self.style.WARNING(
                f"Warning: {share:.0%} of the query products' encoded text contains the label they are "
                "judged by; the text-based rankings are flattered."
            ))
        else:
            self._say(2, f"{share:.1%} of query texts contain their label verbatim.")

    def _sweep(self, catalog: evaluation.EvalCatalog, relevance: evaluation.Relevance, queries: Any,
               ks: tuple[int, ...], options: dict[str, Any]) -> list[Any]:
        metric = options["optimise"] or f"precision@{max(ks)}"
        steps = options["sweep_steps"]
        quiet = options["verbosity"] < 1 or not sys.stderr.isatty()
        bar = tqdm(total=steps + 1, unit="weights", disable=quiet)
        try:
            grid = evaluation.sweep_weights(
                catalog, relevance, queries, steps=steps, ks=ks, normalisation=options["normalisation"],
                progress=bar.update,
            )
        finally:
            bar.close()
        if metric not in grid[0][1]:
            raise CommandError(f"--optimise {metric!r} is not a metric; choose from {', '.join(grid[0][1])}")
        self.stdout.write(f"\nWeight sweep (fused), maximising {metric}:")
        self.stdout.write(f"{'image':>6} {'text':>6}  {metric:>14}  {'ndcg@' + str(max(ks)):>9}  {'mrr':>6}")
        best = max(grid, key=lambda row: row[1][metric])
        for weights, metrics in grid:
            mark = "  <- best" if weights == best[0] else ""
            self.stdout.write(
                f"{weights['image']:6.2f} {weights['text']:6.2f}  {metrics[metric]:14.4f}  "
                f"{metrics[f'ndcg@{max(ks)}']:9.4f}  {metrics['mrr']:6.4f}{mark}"
            )
        self.stdout.write(f"Best weights: {best[0]} ({metric} {best[1][metric]:.4f}).")
        if options["write_settings"]:
            path = options["write_settings"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(evaluation.settings_snippet(best[0], path))
            self._say(1, f"wrote the best weights to {path}")
        return grid

    def _table(self, metrics: dict[str, dict[str, float]], ks: tuple[int, ...], title: str, *,
               columns: list[str] | None = None, label: str = "ranking") -> None:
        columns = columns or (
            [f"{m}@{k}" for m in ("precision", "recall", "ndcg") for k in ks] + ["mrr", "hit_rate@1"]
        )
        width = max(len(c) for c in columns) + 1
        first = max([len(label), *(len(name) for name in metrics)]) + 1
        self.stdout.write(f"Similarity quality ({title}):")
        self.stdout.write(f"{label:<{first}}" + "".join(f"{c:>{width}}" for c in columns) + f"{'queries':>9}")
        for name, values in metrics.items():
            self.stdout.write(
                f"{name:<{first}}" + "".join(f"{values.get(c, float('nan')):>{width}.4f}" for c in columns)
                + f"{int(values.get('queries', 0)):>9}"
            )

    def _write_json(self, path: Path | None, metrics: dict[str, dict[str, float]]) -> None:
        if not path:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        self._say(1, f"wrote {path}")

    def _say(self, level: int, message: str) -> None:
        if self.verbosity >= level:
            self.stdout.write(message)

    def execute(self, *args: Any, **options: Any) -> Any:
        self.verbosity = options.get("verbosity", 1)
        return super().execute(*args, **options)
