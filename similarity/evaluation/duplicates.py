"""``similarity_evaluate --task duplicates --planted FILE``: precision and recall of duplicate
detection on planted copies (``bench/plant_duplicates.py`` writes them, ``import_catalog`` puts
them next to their originals).

A reported pair counts when it involves a planted copy: right if it is the copy and its
original (or, in ``precision``, a listing reported as a duplicate of that original), wrong
otherwise. Pairs between two listings that were not planted are the catalog's own duplicates,
counted apart (they are not errors, and not known to be right either).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import registry
from ..duplicates import DEFAULT_THRESHOLD, DuplicatePair, find_duplicates
from .catalog import EvaluationError, _read_csv

THRESHOLDS = (0.75, 0.8, 0.85, 0.9, 0.95)


def planted_pairs(path: Path) -> list[tuple[str, str]]:
    rows = _read_csv(path, ("sku_a", "sku_b"))
    pairs = [(row["sku_a"].strip(), row["sku_b"].strip()) for row in rows]
    if not pairs:
        raise EvaluationError(f"{path} lists no planted pair")
    return pairs


def score_pairs(found: Sequence[DuplicatePair], planted: list[tuple[str, str]]) -> dict[str, float]:
    """Precision and recall over the pairs that involve a planted copy.

    ``precision (strict)`` counts only the copy and its own original as right. ``precision``
    also accepts the copy paired with a listing that is reported as a duplicate of its original
    in the same run (a copy of one of the catalog's own duplicates is a duplicate of all of them).
    """
    truth = {frozenset(p) for p in planted}
    original_of = {b: a for a, b in planted}
    names = {frozenset((p.name_a, p.name_b)) for p in found}
    involved = [p for p in found if p.name_a in original_of or p.name_b in original_of]
    right = strict = 0
    for pair in involved:
        key = frozenset((pair.name_a, pair.name_b))
        if key in truth:
            right += 1
            strict += 1
            continue
        copy, other = (pair.name_a, pair.name_b) if pair.name_a in original_of else (pair.name_b, pair.name_a)
        if frozenset((original_of[copy], other)) in names:
            right += 1
    recalled = {frozenset((p.name_a, p.name_b)) for p in involved} & truth
    return {
        "precision": right / len(involved) if involved else 0.0,
        "precision (strict)": strict / len(involved) if involved else 0.0,
        "recall": len(recalled) / len(truth),
        "reported": float(len(involved)),
        "catalog pairs": float(len(found) - len(involved)),
    }


def evaluate_duplicates(
    path: Path, *, model: Any = None, thresholds: Sequence[float] = THRESHOLDS,
) -> tuple[dict[str, dict[str, float]], list[DuplicatePair]]:
    """Metrics per threshold (one scan at the lowest), and the pairs between non-planted listings
    at the default threshold (the catalog's own likely duplicates)."""
    spec = registry.get_spec(model)
    planted = planted_pairs(path)
    missing = [sku for pair in planted for sku in pair if not spec.get_queryset().filter(
        **{spec.lookup_field: sku}).exists()]
    if len(missing) == 2 * len(planted):
        raise EvaluationError(f"none of the listings in {path} is in the catalog; import the planted copies first")
    if missing:
        planted = [p for p in planted if p[0] not in missing and p[1] not in missing]
    found = find_duplicates(spec, threshold=min(thresholds))
    metrics = {f"{t:.2f}": score_pairs([p for p in found if p.score >= t], planted) for t in sorted(thresholds)}
    copies = {b for _a, b in planted}
    own = [p for p in found if p.score >= DEFAULT_THRESHOLD and p.name_a not in copies and p.name_b not in copies]
    return metrics, own
