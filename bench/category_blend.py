"""Choose the category classifier's blend weight and temperature on one half of the
top-level categories, report them on the other half, then the reverse.

    python -m bench.category_blend [--seeds 0 1] [--json FILE]

Over the indexed catalog of the project's settings (``DJANGO_SETTINGS_MODULE``, default
``config.settings``; ``similarity_evaluate --task categories`` on the same data): the
halves are the top-level category names in sorted order, alternately to A and B (as
``similarity_evaluate --cross-split``). For each seed, 20% of the categories are hidden (all of
them in every run, so the classifier never learns one); a setting is scored by its level-2
accuracy@1 on the hidden products of one half, averaged over the seeds, and the best one is
reported on the other half. Blend weight 0 is the neighbours' vote alone.

    python -m bench.category_blend --alternatives [--seeds 0 1 2] [--json FILE]

The other suggesters tried for issue 12's level-2 goal, each alone on the same hidden products
(level-2 accuracy@1, all products and per half): the shipped blend, the fused vote alone, a vote
over the text or the image neighbours alone, the centroid classifier alone, a logistic
regression on the classifier's features (``C`` chosen on the other half), and a label-free
prior from the category names (each category's last two names encoded with the text model; a
product's probability for a category is a softmax at temperature 0.05 of the best cosine
between its text vector and the category's leaves). Then a blend of the votes and the name prior
whose weights are chosen per run by leave-one-out on the products that kept their category (a
rule, no weight fitted to the catalog), and "any": the share that at least one of them gets
right, a ceiling for blending them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.75, 1.0)
TEMPERATURES = (0.02, 0.05, 0.1)
METRIC = ("level 2", "accuracy@1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--hide", type=float, default=0.2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--alternatives", action="store_true", help="score the other suggesters tried (issue 12)")
    args = parser.parse_args(argv)

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from similarity.evaluation import categories as evaluation
    from similarity.evaluation.catalog import load_catalog

    catalog = load_catalog()
    tops = sorted({c[0] for c in catalog.categories if c})
    halves = {"A": tops[0::2], "B": tops[1::2]}
    if args.alternatives:
        from bench.category_alternatives import compare

        report = compare(catalog, halves, seeds=args.seeds, hide=args.hide)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    _reuse_fits(evaluation)

    scores: dict[str, dict[tuple[float, float], list[float]]] = {h: {} for h in halves}
    for half, names in halves.items():
        for c in TEMPERATURES:
            for weight in WEIGHTS:
                if weight == 0 and c != TEMPERATURES[0]:
                    continue  # the vote alone does not depend on the temperature
                for seed in args.seeds:
                    report = evaluation.evaluate_categories(catalog, hide=args.hide, seed=seed, tops=names,
                                                            classifier_weight=weight, classifier_temperature=c)
                    scores[half].setdefault((weight, c), []).append(report["levels"][METRIC[0]][METRIC[1]])
    out: dict[str, Any] = {"halves": halves, "seeds": args.seeds, "grid": {}, "chosen": {}}
    for half in halves:
        other = "B" if half == "A" else "A"
        mean = {key: sum(v) / len(v) for key, v in scores[half].items()}
        other_mean = {key: sum(v) / len(v) for key, v in scores[other].items()}
        vote_alone = min(key for key in mean if key[0] == 0)
        out["grid"][half] = {f"weight {w} temperature {c}": round(v, 4) for (w, c), v in sorted(mean.items())}
        # every setting tied for best on this half, with its score on the other
        top = max(mean.values())
        out["chosen"][f"on {half}, reported on {other}"] = [{
            "weight": key[0], "temperature": key[1], f"{half} (chosen on)": round(mean[key], 4),
            f"{other} (reported)": round(other_mean[key], 4), f"{other} vote alone": round(other_mean[vote_alone], 4),
            f"{other} per seed": [round(v, 4) for v in scores[other][key]],
        } for key in sorted(mean) if mean[key] >= top - 1e-9]
        print(f"half {half} ({', '.join(halves[half])}): level-2 accuracy@1, mean over seeds {args.seeds}")
        for (w, c), v in sorted(mean.items()):
            print(f"  weight {w:<5} temperature {c:<5} {v:.4f}")
    print(json.dumps(out["chosen"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _reuse_fits(evaluation: Any) -> None:
    """Fit each (training set, temperature) once: the blend weights and both halves share them."""
    base = evaluation.CategoryClassifier
    fits: dict[Any, Any] = {}

    class Reused(base):  # type: ignore[misc,valid-type]
        @classmethod
        def fit(cls, batches: Any, **options: Any) -> Any:
            key = (tuple(tuple(p) for _, paths in batches for p in paths), tuple(sorted(options.items())))
            if key not in fits:
                fits[key] = base.fit(batches, **options)
            return fits[key]

    evaluation.CategoryClassifier = Reused


if __name__ == "__main__":
    raise SystemExit(main())
