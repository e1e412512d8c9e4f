"""``similarity_evaluate --task categories``: hide a seeded share of the categories and suggest
them back with :func:`similarity.categories.vote`, over the neighbours ``find_similar`` would give
(the numpy :class:`~.ranking.Ranker`: same fusion, exclusion and one per group), blended with a
:class:`~similarity.categories.CategoryClassifier` learned from the products that keep their
category (as :func:`~similarity.categories.suggest_category` does for a product without one).

A hidden product's category is not used anywhere: it does not vote for others, the classifier
never learns it, and the spec's text must not contain it (a spec with ``text_includes_taxonomy``
is refused). Accuracy@1 and @3 per level are compared with the "most frequent category"
baseline, counted over the products that keep their category. Per level, ``unseen`` counts the
hidden products whose true category no product that kept its category has (no suggestion from
the shop's own labels can name it), and :func:`error_breakdown` says where the misses are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Any

import numpy as np

from ..categories import (
    CLASSIFIER_TEMPERATURE,
    CLASSIFIER_WEIGHT,
    NEIGHBOURS,
    SEPARATOR,
    CategoryClassifier,
    feature_matrix,
    vote,
)
from .catalog import EvalCatalog, EvaluationError
from .ranking import BLOCK, Ranker, top_k

#: confidences at which the report gives coverage and accuracy (for an "apply above" setting)
CONFIDENCE_STEPS = (0.5, 0.7, 0.9)
#: the error breakdown's buckets: how many labelled products the true category has (lower bounds)
SIZE_BUCKETS = (0, 1, 5, 20)


def hidden_positions(catalog: EvalCatalog, share: float, seed: int) -> np.ndarray:
    """A seeded ``share`` of the products that have a category."""
    if not 0 < share < 1:
        raise EvaluationError("--hide takes a share between 0 and 1, e.g. 0.2")
    labelled = np.array([i for i, c in enumerate(catalog.categories) if c], dtype=int)
    if len(labelled) < 2:
        raise EvaluationError("fewer than two products have a category; nothing to suggest from")
    size = max(1, round(share * len(labelled)))
    return np.sort(np.random.default_rng(seed).choice(labelled, size=size, replace=False))


def evaluate_categories(
    catalog: EvalCatalog, *, hide: float = 0.2, seed: int = 0, neighbours: int = NEIGHBOURS,
    tops: Collection[str] | None = None, classifier_weight: float = CLASSIFIER_WEIGHT,
    classifier_temperature: float = CLASSIFIER_TEMPERATURE,
) -> dict[str, Any]:
    """Accuracy@1/@3 per level of the suggestions for the hidden products, and the baseline.

    ``tops``: only score hidden products under these top-level categories (to choose a setting
    on one half of a catalog's categories and check it on the other). ``classifier_weight``
    (0: the vote alone) and ``classifier_temperature``: the classifier's blend weight and softmax
    temperature."""
    if catalog.spec is not None and catalog.spec.text_includes_taxonomy:
        raise EvaluationError(
            "the spec puts the category path into the encoded text, so a hidden category would still "
            "be seen; evaluate with a spec without it."
        )
    hidden = hidden_positions(catalog, hide, seed)
    is_hidden = np.zeros(len(catalog), dtype=bool)
    is_hidden[hidden] = True  # all of them, also those ``tops`` does not score
    if tops is not None:
        hidden = np.array([q for q in hidden if catalog.categories[q][0] in set(tops)], dtype=int)
        if not len(hidden):
            raise EvaluationError("no hidden product falls under the chosen top-level categories")
    known = [[] if is_hidden[i] else list(c) for i, c in enumerate(catalog.categories)]
    depth = max(len(catalog.categories[q]) for q in hidden)
    ranker = Ranker(catalog, limit=neighbours)
    matrix = feature_matrix(catalog.vectors)
    classifier = (CategoryClassifier.fit([(catalog.vectors, known)], temperature=classifier_temperature)
                  if classifier_weight > 0 else None)
    priors: list[Any] = classifier.predict(matrix[hidden]) if classifier is not None else [None] * len(hidden)
    unique_groups = len(set(catalog.groups.tolist())) == len(catalog)
    suggestions = []
    for start in range(0, len(hidden), BLOCK):
        block = hidden[start : start + BLOCK]
        scores = ranker.scores("fused", block)
        top = top_k(scores, neighbours, None if unique_groups else catalog.groups)
        for row in range(len(block)):
            suggestions.append(vote(((known[c], float(scores[row, c])) for c in top[row] if c >= 0),
                                    prior=priors[start + row], prior_weight=classifier_weight))
    levels: dict[str, dict[str, float]] = {}
    for level in range(1, depth + 1):
        truth = [tuple(catalog.categories[q][:level]) for q in hidden]
        counted = [i for i, t in enumerate(truth) if len(t) == level]
        if not counted:
            continue
        labelled = Counter(tuple(c[:level]) for c in known if len(c) >= level)
        frequent = [p for p, _ in labelled.most_common(3)]
        acc1 = acc3 = base1 = base3 = 0
        for i in counted:
            suggestion = suggestions[i]
            ranked = ([p for p, _ in suggestion.levels[level - 1]]
                      if suggestion is not None and len(suggestion.levels) >= level else [])
            acc1 += bool(ranked) and ranked[0] == truth[i]
            acc3 += truth[i] in ranked[:3]
            base1 += bool(frequent) and frequent[0] == truth[i]
            base3 += truth[i] in frequent
        n = len(counted)
        levels[f"level {level}"] = {
            "accuracy@1": acc1 / n, "accuracy@3": acc3 / n,
            "baseline accuracy@1": base1 / n, "baseline accuracy@3": base3 / n, "products": float(n),
            "unseen": float(sum(1 for i in counted if truth[i] not in labelled)),
        }
    return {"levels": levels, "confidence": _by_confidence(catalog, hidden, suggestions),
            "errors": error_breakdown(catalog, hidden, suggestions, known, level=min(2, depth)),
            "hidden": int(len(hidden)), "neighbours": neighbours,
            "classifier": {"weight": classifier_weight, "temperature": classifier_temperature,
                           "trained on": classifier.trained_on if classifier is not None else 0}}


def error_breakdown(catalog: EvalCatalog, hidden: np.ndarray, suggestions: list[Any], known: list[list[str]],
                    *, level: int = 2, confusions: int = 10) -> dict[str, Any]:
    """Where the misses at ``level`` are: how many had the level above right, how many labelled
    products their true category has (:data:`SIZE_BUCKETS`), and the most frequent
    (true, suggested) pairs."""
    labelled = Counter(tuple(c[:level]) for c in known if len(c) >= level)
    misses: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    for q, suggestion in zip(hidden.tolist(), suggestions, strict=True):
        truth = tuple(catalog.categories[q][:level])
        if len(truth) < level:
            continue
        ranked = suggestion.levels[level - 1] if suggestion is not None and len(suggestion.levels) >= level else []
        if not ranked or ranked[0][0] != truth:
            misses.append((truth, ranked[0][0] if ranked else ()))
    buckets = {}
    for low, high in zip(SIZE_BUCKETS, [*SIZE_BUCKETS[1:], None], strict=True):
        name = f"{low}+" if high is None else (f"{low}" if high == low + 1 else f"{low}-{high - 1}")
        buckets[name] = sum(1 for t, _ in misses if labelled[t] >= low and (high is None or labelled[t] < high))
    pairs = Counter((SEPARATOR.join(t), SEPARATOR.join(p)) for t, p in misses)
    return {
        "level": level, "misses": len(misses),
        "level above right": sum(1 for t, p in misses if p and p[:-1] == t[:-1]) if level > 1 else 0,
        "labelled products in the true category": buckets,
        "confusions": [[t, p, n] for (t, p), n in pairs.most_common(confusions)],
    }


def _by_confidence(catalog: EvalCatalog, hidden: np.ndarray, suggestions: list[Any]) -> dict[str, dict[str, float]]:
    """Share of hidden products whose whole suggested path clears each confidence, and how often
    that path is a correct prefix of the truth (what "apply above a confidence" would write)."""
    out = {}
    for step in CONFIDENCE_STEPS:
        chosen = [(q, s) for q, s in zip(hidden.tolist(), suggestions, strict=True) if s and s.confidence >= step]
        right = sum(1 for q, s in chosen if list(catalog.categories[q][: len(s.path)]) == s.path)
        out[f">= {step}"] = {
            "coverage": len(chosen) / len(hidden) if len(hidden) else 0.0,
            "accuracy": right / len(chosen) if chosen else 0.0,
        }
    return out
