"""Is a fusion rule fitted to one catalog? Choose it on one half of the top-level categories,
report it on the other half, then the reverse (``similarity_evaluate --cross-split``).

The halves: the top-level category names in sorted order, alternately to A and B. Each half is
evaluated as a catalog of its own (queries and candidates from that half only), with the
evaluation's real ``fused`` ranking (candidate sets, exclusions, one per group).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ..training.reliability import modality_weights
from .catalog import EvalCatalog, Relevance
from .ranking import Ranker, evaluate

#: the rules compared: name → weights from the half's own vectors (no labels)
RULES: dict[str, Callable[[EvalCatalog], dict[str, float]]] = {
    "old default 0.3/0.7 (tuned on flipkart)": lambda c: {"image": 0.3, "text": 0.7},
    "equal": lambda c: {"image": 0.5, "text": 0.5},
    "agreement (label-free)": lambda c: modality_weights(
        {m: np.where(c.present[m][:, None], c.vectors[m], 0) for m in ("image", "text")}),
}


def subset(catalog: EvalCatalog, relevance: Relevance, rows: np.ndarray) -> tuple[EvalCatalog, Relevance]:
    pick = rows.tolist()
    part = replace(
        catalog, pks=[catalog.pks[i] for i in pick], skus=[catalog.skus[i] for i in pick],
        titles=[catalog.titles[i] for i in pick], texts=[catalog.texts[i] for i in pick],
        categories=[catalog.categories[i] for i in pick], groups=catalog.groups[rows],
        vectors={m: v[rows] for m, v in catalog.vectors.items()},
        present={m: v[rows] for m, v in catalog.present.items()},
        objects=[catalog.objects[i] for i in pick] if catalog.objects else [],
    )
    assert relevance.labels is not None
    return part, Relevance(relevance.name, labels=relevance.labels[rows])


def halves(catalog: EvalCatalog) -> dict[str, np.ndarray]:
    tops = np.array([c[0] if c else "" for c in catalog.categories])
    names = sorted(set(tops) - {""})
    return {"A": np.flatnonzero(np.isin(tops, names[0::2])), "B": np.flatnonzero(np.isin(tops, names[1::2]))}


def cross_split(
    catalog: EvalCatalog, relevance: Relevance, *, ks: Sequence[int] = (10,),
) -> list[dict[str, object]]:
    """One row per direction: the rule chosen on one half and every rule's score on the other."""
    metric = f"precision@{max(ks)}"
    parts = {name: subset(catalog, relevance, rows) for name, rows in halves(catalog).items()}
    scores: dict[str, dict[str, float]] = {}
    weights: dict[str, dict[str, dict[str, float]]] = {}
    singles: dict[str, dict[str, float]] = {}
    for name, (part, rel) in parts.items():
        scores[name], weights[name] = {}, {}
        for rule, choose in RULES.items():
            w = choose(part)
            result = evaluate(part, rel, rankings=("fused",), ks=ks, curve_depth=max(ks),
                              ranker=Ranker(part, weights=w, limit=max(ks)))
            scores[name][rule], weights[name][rule] = result.metrics["fused"][metric], w
        single = evaluate(part, rel, rankings=("image", "text"), ks=ks, curve_depth=max(ks))
        singles[name] = {m: single.metrics[m][metric] for m in ("image", "text")}
    out = []
    for chose_on, report_on in (("A", "B"), ("B", "A")):
        chosen = max(scores[chose_on], key=lambda rule: scores[chose_on][rule])
        out.append({
            "chosen on": chose_on, "rule": chosen, "reported on": report_on,
            "score": scores[report_on][chosen], "weights": weights[report_on][chosen],
            "every rule": scores[report_on], "single": singles[report_on],
        })
    return out


def cross_split_lines(catalog: EvalCatalog, relevance: Relevance, ks: Sequence[int], *,
                      compare_untrained: bool = False) -> list[str]:
    """The check as printable lines (with the plain encoders' vectors too when asked)."""
    from .joint import untrained_catalog

    variants = [("live vectors", catalog)]
    if compare_untrained:
        variants.append(("untrained", untrained_catalog(catalog)))
    lines = [f"\nCross-split check of the fusion rule (precision@{max(ks)}; halves of the top-level categories):"]
    for label, variant in variants:
        for row in cross_split(variant, relevance, ks=ks):
            every = ", ".join(f"{rule} {value:.4f}" for rule, value in row["every rule"].items())  # type: ignore[attr-defined]
            single = ", ".join(f"{m} {v:.4f}" for m, v in row["single"].items())  # type: ignore[attr-defined]
            lines.append(
                f"  [{label}] chosen on {row['chosen on']}: {row['rule']} -> on {row['reported on']} "
                f"{row['score']:.4f} (weights {row['weights']}); every rule there: {every}; single: {single}"
            )
    return lines
