"""The category suggesters tried against issue 12's level-2 goal, side by side on the hidden
products of ``similarity_evaluate --task categories`` (``python -m bench.category_blend
--alternatives``; the module docstring there says what each one is).

Every suggester gives per hidden product and per level {path prefix: probability}; the same
top-down choice as :func:`similarity.categories.vote` turns that into a suggestion. Hidden
products never vote, are never learned from, and their categories' names are only candidates
when a product that kept its category has them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from similarity.categories import CLASSIFIER_WEIGHT, NEIGHBOURS, SHARPEN, CategoryClassifier, feature_matrix, vote
from similarity.evaluation.catalog import EvalCatalog
from similarity.evaluation.categories import hidden_positions
from similarity.evaluation.ranking import Ranker, top_k

Levels = list[dict[tuple[str, ...], float]]
#: a full category path's encoded name (unit length)
Names = dict[tuple[str, ...], np.ndarray]
NAME_TEMPERATURE = 0.05
LOGISTIC_C = (1.0, 10.0, 100.0)
#: the leave-one-out blend's weight grid, per suggester
LOO_GRID = (0.0, 0.25, 0.5, 1.0)
LOO_BLENDED = ("fused vote", "text vote", "image vote", "name prior")


def compare(catalog: EvalCatalog, halves: Mapping[str, Sequence[str]], *, seeds: Sequence[int],
            hide: float) -> dict[str, Any]:
    """Level-2 accuracy@1 of each suggester per seed, all hidden products and per half."""
    names = _name_vectors(catalog)
    out: dict[str, Any] = {"seeds": list(seeds), "halves": {h: list(v) for h, v in halves.items()}, "runs": {}}
    for seed in seeds:
        started = time.perf_counter()
        hidden = hidden_positions(catalog, hide, seed)
        is_hidden = np.zeros(len(catalog), dtype=bool)
        is_hidden[hidden] = True
        known = [[] if is_hidden[i] else list(c) for i, c in enumerate(catalog.categories)]
        labelled = np.flatnonzero([bool(k) for k in known])
        suggesters = _suggesters(catalog, known, hidden, names)
        # logistic regression: C chosen on one half's hidden products, reported on the other
        for half, tops in halves.items():
            scored = {c: _accuracy(catalog, hidden, suggesters[f"logistic C={c}"], tops) for c in LOGISTIC_C}
            best = max(scored, key=scored.__getitem__)
            suggesters[f"logistic (C chosen on {half})"] = suggesters[f"logistic C={best}"]
        # the leave-one-out blend: weights chosen on the labelled products, by their own neighbours
        on_labelled = _suggesters(catalog, known, labelled, names, only=LOO_BLENDED, leave_one_out=True)
        weights = max(
            (w for w in itertools.product(LOO_GRID, repeat=len(LOO_BLENDED)) if any(w[:3])),
            key=lambda w: (_accuracy(catalog, labelled, _blend(on_labelled, w), None), -sum(w)),
        )
        suggesters["leave-one-out blend"] = _blend({k: suggesters[k] for k in LOO_BLENDED}, weights)
        rows = {}
        for name, levels in suggesters.items():
            if name.startswith("logistic C="):
                continue
            rows[name] = {"all": _accuracy(catalog, hidden, levels, None),
                          **{half: _accuracy(catalog, hidden, levels, tops) for half, tops in halves.items()}}
        right = [_right(catalog, hidden, levels) for name, levels in suggesters.items()]
        rows["any of them (ceiling)"] = {"all": float(np.mean(np.any(right, axis=0)))}
        out["runs"][str(seed)] = {"level-2 accuracy@1": rows, "leave-one-out weights": dict(zip(LOO_BLENDED, weights,
                                                                                             strict=True)),
                                  "seconds": round(time.perf_counter() - started, 1)}
        print(f"seed {seed} ({time.perf_counter() - started:.0f} s); leave-one-out weights "
              f"{dict(zip(LOO_BLENDED, weights, strict=True))}")
        for name, row in rows.items():
            print(f"  {name:<32}" + "  ".join(f"{k} {v:.4f}" for k, v in row.items()))
    return out


def _suggesters(catalog: EvalCatalog, known: list[list[str]], rows: np.ndarray, names: Names,
                *, only: Sequence[str] | None = None, leave_one_out: bool = False) -> dict[str, list[Levels]]:
    """{suggester: per row of ``rows``, per level {prefix: probability}}. ``leave_one_out``: rows
    are labelled products, each scored without its own label (the kNN never sees a product
    itself; a category only it has is no candidate of the name prior)."""
    want = set(only or ("blend", "fused vote", "text vote", "image vote", "centroid", "logistic", "name prior"))
    ranker = Ranker(catalog, limit=NEIGHBOURS)
    out: dict[str, list[Levels]] = {}
    for ranking, name in (("fused", "fused vote"), ("text", "text vote"), ("image", "image vote")):
        if name not in want and not (ranking == "fused" and "blend" in want):
            continue
        levels: list[Levels] = []
        for start in range(0, len(rows), 256):
            block = rows[start : start + 256]
            scores = ranker.scores(ranking, block)
            top = top_k(scores, NEIGHBOURS)
            for r in range(len(block)):
                s = vote(((known[c], float(scores[r, c])) for c in top[r] if c >= 0), sharpen=SHARPEN)
                levels.append(_as_levels(s))
        out[name] = levels
    features = feature_matrix(catalog.vectors)
    if "blend" in want or "centroid" in want:
        classifier = CategoryClassifier.fit([(catalog.vectors, known)])
        assert classifier is not None
        priors = classifier.predict(features[rows])
        out["centroid"] = [list(p) for p in priors]
        if "blend" in want:
            # the shipped blend: as :func:`vote` with ``prior``, (1 - weight) x vote share + weight x probability
            out["blend"] = _blend({"vote": out["fused vote"], "centroid": out["centroid"]},
                                  (1 - CLASSIFIER_WEIGHT, CLASSIFIER_WEIGHT))
            if "fused vote" not in want:
                del out["fused vote"]
    if "logistic" in want:
        from sklearn.linear_model import LogisticRegression

        train = [i for i, k in enumerate(known) if k]
        leaves = [tuple(known[i]) for i in train]
        for c in LOGISTIC_C:
            model = LogisticRegression(C=c, max_iter=300).fit(features[train], [" > ".join(p) for p in leaves])
            probabilities = model.predict_proba(features[rows])
            classes = [tuple(label.split(" > ")) for label in model.classes_]
            out[f"logistic C={c}"] = [_prefix_sums(dict(zip(classes, p, strict=True))) for p in probabilities]
    if "name prior" in want:
        out["name prior"] = _name_prior(catalog, known, rows, names, leave_one_out)
    return out


def _name_vectors(catalog: EvalCatalog) -> Names:
    """Each full category path's last two names, encoded with the spec's text model (unit)."""
    from similarity import registry

    paths = sorted({tuple(c) for c in catalog.categories if c})
    vectors = registry.text_encoder().encode([" ".join(p[-2:]) for p in paths]).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return dict(zip(paths, vectors, strict=True))


def _name_prior(catalog: EvalCatalog, known: list[list[str]], rows: np.ndarray, names: Names,
                leave_one_out: bool) -> list[Levels]:
    counts: dict[tuple[str, ...], int] = {}
    for k in known:
        if k:
            counts[tuple(k)] = counts.get(tuple(k), 0) + 1
    leaves = sorted(counts)
    text = catalog.vectors["text"][rows].astype(np.float64)
    text /= np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    cosines = text @ np.stack([names[p] for p in leaves]).T
    out = []
    for r, q in enumerate(rows.tolist()):
        own = tuple(known[q]) if leave_one_out else ()
        levels: Levels = []
        depth = max(len(p) for p in leaves)
        for level in range(1, depth + 1):
            best: dict[tuple[str, ...], float] = {}
            for j, leaf in enumerate(leaves):
                # leave one out: a category (at this level) that only this product has is no candidate
                if len(leaf) < level or (leaf == own and counts[leaf] == 1):
                    continue
                prefix = leaf[:level]
                best[prefix] = max(best.get(prefix, -1.0), float(cosines[r, j]))
            logits = np.array(list(best.values())) / NAME_TEMPERATURE
            p = np.exp(logits - logits.max())
            levels.append(dict(zip(best, p / p.sum(), strict=True)))
        out.append(levels)
    return out


def _as_levels(suggestion: Any) -> Levels:
    if suggestion is None:
        return []
    return [dict(ranked) for ranked in suggestion.levels]


def _prefix_sums(leaves: Mapping[tuple[str, ...], float]) -> Levels:
    depth = max(len(p) for p in leaves)
    out: Levels = [{} for _ in range(depth)]
    for path, p in leaves.items():
        for level in range(1, len(path) + 1):
            out[level - 1][path[:level]] = out[level - 1].get(path[:level], 0.0) + float(p)
    return out


def _blend(suggesters: Mapping[str, list[Levels]], weights: Sequence[float]) -> list[Levels]:
    names = list(suggesters)
    out = []
    for row in zip(*(suggesters[n] for n in names), strict=True):
        depth = max(len(levels) for levels in row)
        blended: Levels = []
        for level in range(depth):
            merged: dict[tuple[str, ...], float] = {}
            for w, levels in zip(weights, row, strict=True):
                if w and len(levels) > level:
                    total = sum(levels[level].values()) or 1.0
                    for prefix, p in levels[level].items():
                        merged[prefix] = merged.get(prefix, 0.0) + w * p / total
            blended.append(merged)
        out.append(blended)
    return out


def _top_down(levels: Levels, level: int) -> tuple[str, ...] | None:
    chosen: tuple[str, ...] = ()
    for depth in range(level):
        if depth >= len(levels):
            return None
        under = [(p, w) for p, w in levels[depth].items() if p[:-1] == chosen and w > 0]
        if not under:
            return None
        chosen = min(under, key=lambda row: (-row[1], row[0]))[0]
    return chosen


def _right(catalog: EvalCatalog, rows: np.ndarray, suggestions: list[Levels], level: int = 2) -> np.ndarray:
    return np.array([_top_down(s, level) == tuple(catalog.categories[q][:level])
                     for q, s in zip(rows.tolist(), suggestions, strict=True)])


def _accuracy(catalog: EvalCatalog, rows: np.ndarray, suggestions: list[Levels], tops: Sequence[str] | None,
              level: int = 2) -> float:
    keep = np.array([len(catalog.categories[q]) >= level and (tops is None or catalog.categories[q][0] in tops)
                     for q in rows.tolist()])
    right = _right(catalog, rows, suggestions, level)
    return float(right[keep].mean()) if keep.any() else 0.0
