"""``similarity_evaluate --task categories|duplicates``: run the evaluation and print its table
(the command stays a thin adapter; this is the printing side of :mod:`.categories` and
:mod:`.duplicates`)."""

from __future__ import annotations

from typing import Any

from ..categories import CLASSIFIER_WEIGHT, NEIGHBOURS
from .catalog import EvaluationError, load_catalog
from .categories import evaluate_categories
from .duplicates import evaluate_duplicates


def run_task(command: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Print the task's report on ``command.stdout``; return its metrics (for ``--json``)."""
    write = command.stdout.write
    if options["task"] == "categories":
        catalog = load_catalog(options["model"])
        weight = options.get("classifier_weight")
        report = evaluate_categories(catalog, hide=options["hide"], seed=options["seed"],
                                     neighbours=options["neighbours"] or NEIGHBOURS,
                                     classifier_weight=CLASSIFIER_WEIGHT if weight is None else weight)
        write(f"Category suggestions: {report['hidden']} of {len(catalog)} products had their category hidden "
              f"(seed {options['seed']}); {report['neighbours']} neighbours vote.")
        classifier = report["classifier"]
        write(f"Classifier: learned from {classifier['trained on']} products that kept their category, "
              f"blend weight {classifier['weight']}" if classifier["trained on"] else
              "Classifier: none (too few labelled products, or weight 0): the vote alone.")
        columns = ["accuracy@1", "accuracy@3", "baseline accuracy@1", "baseline accuracy@3", "products", "unseen"]
        write(f"{'level':<9}" + "".join(f"{c:>21}" for c in columns))
        for level, values in report["levels"].items():
            write(f"{level:<9}" + "".join(
                f"{values[c]:>21.0f}" if c in ("products", "unseen") else f"{values[c]:>21.4f}" for c in columns))
        write("unseen: hidden products whose true category no product that kept its category has.")
        errors = report["errors"]
        write(f"Level {errors['level']}: {errors['misses']} misses, {errors['level above right']} of them with the "
              f"level above right; by labelled products in the true category: "
              + ", ".join(f"{n} in {bucket}" for bucket, n in errors["labelled products in the true category"].items()))
        for truth, suggested, n in errors["confusions"][:5]:
            write(f"  {n} x {truth}  ->  {suggested or '(nothing)'}")
        write("Whole suggested path, by confidence:")
        for step, values in report["confidence"].items():
            write(f"  confidence {step}: coverage {values['coverage']:.3f}, accuracy {values['accuracy']:.4f}")
        return report
    if options["task"] == "duplicates":
        if not options["planted"]:
            raise EvaluationError("--task duplicates needs --planted FILE (bench/plant_duplicates.py writes one)")
        metrics, own = evaluate_duplicates(options["planted"], model=options["model"])
        write(f"Duplicates of the planted copies in {options['planted'].name}:")
        write(f"{'threshold':<10}{'precision':>10}{'(strict)':>10}{'recall':>8}{'reported':>10}{'catalog pairs':>15}")
        for threshold, values in metrics.items():
            write(f"{threshold:<10}{values['precision']:>10.4f}{values['precision (strict)']:>10.4f}"
                  f"{values['recall']:>8.4f}{values['reported']:>10.0f}{values['catalog pairs']:>15.0f}")
        write(f"{len(own)} pairs between listings that were not planted (the catalog's own likely duplicates):")
        for pair in own[:10]:
            write(f"  {pair.score:.3f}  {pair.name_a}  {pair.name_b}  {'; '.join(pair.reasons)}")
        return {"thresholds": metrics, "catalog_pairs": [p.as_dict() for p in own]}
    raise EvaluationError(f"unknown task {options['task']!r}")
