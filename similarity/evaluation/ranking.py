"""Rankings over the whole catalog (image, text, fused, lexical), their metrics, the weight
sweep and query files.

``fused`` goes through :func:`similarity.fusion.fuse_scores` over the same candidate set that
:func:`~similarity.query.find_similar` builds (the union of each modality's top
``max(SIMILARITY["CANDIDATES"], 4 * k)``), and shows what it shows: the same exclusion
(:func:`~similarity.query.exclusion_mask`) and one per group
(:func:`~similarity.query.pick_one_per_group`).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..conf import get_settings
from ..fusion import fuse_scores
from ..query import exclusion_mask, pick_one_per_group
from ..search import search_image, search_text
from .catalog import DEFAULT_KS, RANKINGS, EvalCatalog, EvaluationError, Relevance

logger = logging.getLogger(__name__)
#: queries scored per numpy block (bounds memory on large catalogs: block × catalog floats)
BLOCK = 256

# ---------------------------------------------------------------------------------------------
# Rankings: a (queries, catalog) score block; -inf = never shown
# ---------------------------------------------------------------------------------------------
class Ranker:
    """Scores blocks of queries against the whole catalog for each ranking."""

    def __init__(self, catalog: EvalCatalog, *, weights: dict[str, float] | None = None,
                 normalisation: str | None = None, candidates: int | None = None, limit: int = 10) -> None:
        self.catalog = catalog
        self.weights = dict(weights or registry.fusion_weights(catalog.spec))
        self.normalisation = normalisation
        # find_similar fetches this many per modality before fusing
        self.fetch = max(candidates or get_settings().candidates, limit * 4)
        self._lexical: Any = None
        self._vectoriser: Any = None

    def lexical_matrix(self) -> Any:
        if self._lexical is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            # Same text the encoder saw; sublinear tf and English stop words: the usual strong
            # TF-IDF baseline.
            self._vectoriser = TfidfVectorizer(sublinear_tf=True, stop_words="english")
            self._lexical = self._vectoriser.fit_transform(self.catalog.texts)
        return self._lexical

    def lexical_query(self, text: str) -> Any:
        self.lexical_matrix()
        return self._vectoriser.transform([text])

    def _exclusions(self, queries: np.ndarray) -> np.ndarray:
        return exclusion_mask(self.catalog.groups, queries)  # itself and its variants, as find_similar

    def cosine(self, modality: str, queries: np.ndarray) -> np.ndarray:
        """Cosines; NaN where the query or the candidate lacks the modality."""
        matrix, have = self.catalog.vectors[modality], self.catalog.present[modality]
        scores = (matrix[queries] @ matrix.T).astype(np.float32)
        scores[:, ~have] = np.nan
        scores[~have[queries], :] = np.nan
        return scores

    def scores(self, ranking: str, queries: np.ndarray, *, weights: dict[str, float] | None = None,
               normalisation: str | None = None) -> np.ndarray:
        excluded = self._exclusions(queries)
        if ranking in ("image", "text"):
            out = self.cosine(ranking, queries)
        elif ranking == "lexical":
            lexical = self.lexical_matrix()
            out = (lexical[queries] @ lexical.T).toarray().astype(np.float32)
        elif ranking == "fused":
            out = self.fused(queries, excluded, weights=weights, normalisation=normalisation)
        else:
            raise EvaluationError(f"unknown ranking {ranking!r}; choose from {', '.join(RANKINGS)}")
        out = np.where(np.isnan(out) | excluded, -np.inf, out)
        return out

    def fused(self, queries: np.ndarray, excluded: np.ndarray, *, weights: dict[str, float] | None = None,
              normalisation: str | None = None) -> np.ndarray:
        weights = dict(weights or self.weights)
        cosines = {m: self.cosine(m, queries) for m in ("image", "text") if weights.get(m, 0) > 0}
        # find_similar's candidate set: the union of each modality's top `fetch` (filters applied)
        candidate = np.zeros((len(queries), len(self.catalog)), dtype=bool)
        for values in cosines.values():
            ranked = np.where(np.isnan(values) | excluded, -np.inf, values)
            k = min(self.fetch, ranked.shape[1])
            top = np.argpartition(-ranked, k - 1, axis=1)[:, :k]
            rows = np.arange(len(queries))[:, None]
            candidate[rows, top] |= np.isfinite(ranked[rows, top])
        masked = {m: np.where(candidate, v, np.nan) for m, v in cosines.items()}
        return fuse_scores(masked, weights, normalisation=normalisation or self.normalisation)


def top_k(scores: np.ndarray, k: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Positions of the k best per row (-1 where fewer exist); one per group like find_similar."""
    n = scores.shape[1]
    depth = min(n, k if groups is None else k * 4)
    if depth < n:
        part = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    else:
        part = np.tile(np.arange(n), (len(scores), 1))
    rows = np.arange(len(scores))[:, None]
    order = part[rows, np.argsort(-scores[rows, part], axis=1, kind="stable")]
    out = np.full((len(scores), k), -1, dtype=int)
    for r in range(len(scores)):
        shown = (int(c) for c in order[r] if np.isfinite(scores[r, c]))
        picked = pick_one_per_group(shown, (lambda c: None) if groups is None else (lambda c: groups[c]), k)
        out[r, : len(picked)] = picked
    return out


# ---------------------------------------------------------------------------------------------
# Metrics (exact, per query; averaged over queries)
# ---------------------------------------------------------------------------------------------
def query_metrics(ranked_gains: Sequence[float], all_gains: Iterable[float], ks: Sequence[int],
                  first_relevant_rank: int | None = None) -> dict[str, float]:
    """Metrics of one ranked list.

    ``ranked_gains``: the gain of each returned item in rank order (0 = not relevant);
    ``all_gains``: the gains of every relevant item that exists for this query (for recall and
    the ideal DCG); ``first_relevant_rank``: the 1-based rank of the first relevant item in the
    full ranking, when it lies beyond ``ranked_gains`` (for MRR), else None = not found.
    """
    gains = [float(g) for g in ranked_gains]
    ideal = sorted((float(g) for g in all_gains if g > 0), reverse=True)
    relevant_total = len(ideal)
    out: dict[str, float] = {}
    for k in ks:
        top = gains[:k]
        hits = sum(1 for g in top if g > 0)
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / relevant_total if relevant_total else 0.0
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(top))
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        out[f"ndcg@{k}"] = dcg / idcg if idcg else 0.0
    first = next((i + 1 for i, g in enumerate(gains) if g > 0), first_relevant_rank)
    out["mrr"] = 1.0 / first if first else 0.0
    out["hit_rate@1"] = 1.0 if gains and gains[0] > 0 else 0.0
    return out


def _first_relevant_rank(scores: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """1-based rank of the best-scored relevant item in each full row (0 = none reachable)."""
    relevant_scores = np.where(gains > 0, scores, -np.inf)
    best = relevant_scores.max(axis=1)
    ranks = (scores > best[:, None]).sum(axis=1) + 1
    return np.where(np.isfinite(best), ranks, 0)


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]  # ranking → metric → value (plus "queries")
    queries: np.ndarray
    top: dict[str, np.ndarray]  # ranking → (queries, depth) positions, for plots
    curves: dict[str, list[float]]  # ranking → precision@1..depth
    per_query: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def by_group(self, catalog: EvalCatalog, metric: str, level: int = 1) -> dict[str, dict[str, float]]:
        """``metric`` per category at ``level`` of the query product: {category: {ranking: value}}."""
        names = [" > ".join(catalog.categories[q][:level]) or "(none)" for q in self.queries.tolist()]
        out: dict[str, dict[str, float]] = {}
        for name in sorted(set(names)):
            rows = [i for i, n in enumerate(names) if n == name]
            out[name] = {
                ranking: float(np.mean([values[i][metric] for i in rows]))
                for ranking, values in self.per_query.items()
            }
            out[name]["queries"] = float(len(rows))
        return out


def evaluate(
    catalog: EvalCatalog, relevance: Relevance, *, queries: np.ndarray | None = None,
    rankings: Sequence[str] = RANKINGS, ks: Sequence[int] = DEFAULT_KS, ranker: Ranker | None = None,
    weights: dict[str, float] | None = None, normalisation: str | None = None, curve_depth: int = 20,
) -> EvalResult:
    """Every ranking over the same queries (those with at least one relevant item)."""
    n = len(catalog)
    queries = relevance.query_candidates(n) if queries is None else np.asarray(queries, dtype=int)
    if not len(queries):
        raise EvaluationError(f"no product has another relevant product ({relevance.name})")
    depth = max(max(ks), curve_depth)
    ranker = ranker or Ranker(catalog, limit=max(ks))
    unique_groups = len(set(catalog.groups.tolist())) == n
    metrics: dict[str, dict[str, float]] = {}
    tops: dict[str, np.ndarray] = {}
    curves: dict[str, list[float]] = {}
    per_query: dict[str, list[dict[str, float]]] = {}
    for ranking in rankings:
        rows: list[dict[str, float]] = []
        top_blocks, curve_hits = [], np.zeros(depth)
        for start in range(0, len(queries), BLOCK):
            block = queries[start : start + BLOCK]
            scores = ranker.scores(ranking, block, weights=weights, normalisation=normalisation)
            gains = relevance.gains(block, n)
            top = top_k(scores, depth, None if unique_groups else catalog.groups)
            first = _first_relevant_rank(scores, gains)
            for r in range(len(block)):
                ranked = [float(gains[r, c]) if c >= 0 else 0.0 for c in top[r]]
                curve_hits += np.cumsum([g > 0 for g in ranked])
                rows.append(query_metrics(ranked[: max(ks)], gains[r][gains[r] > 0], ks,
                                          int(first[r]) or None))
            top_blocks.append(top)
        metrics[ranking] = {**mean_metrics(rows), "queries": float(len(rows))}
        per_query[ranking] = rows
        tops[ranking] = np.concatenate(top_blocks)
        curves[ranking] = (curve_hits / len(queries) / np.arange(1, depth + 1)).tolist()
    return EvalResult(metrics, queries, tops, curves, per_query)


def sample_queries(queries: np.ndarray, sample: int | None, seed: int) -> np.ndarray:
    if not sample or sample >= len(queries):
        return queries
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(queries, size=sample, replace=False))


# ---------------------------------------------------------------------------------------------
# Weight sweep
# ---------------------------------------------------------------------------------------------
def sweep_weights(
    catalog: EvalCatalog, relevance: Relevance, queries: np.ndarray, *, steps: int = 20,
    ks: Sequence[int] = DEFAULT_KS, normalisation: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[dict[str, float], dict[str, float]]]:
    """The fused ranking at image weight 0, 1/steps, ..., 1 (text = 1 - image)."""
    ranker = Ranker(catalog, limit=max(ks))
    out = []
    for i in range(steps + 1):
        image = round(i / steps, 4)
        weights = {"image": image, "text": round(1 - image, 4)}
        result = evaluate(catalog, relevance, queries=queries, rankings=("fused",), ks=ks, ranker=ranker,
                          weights=weights, normalisation=normalisation, curve_depth=max(ks))
        out.append((weights, result.metrics["fused"]))
        if progress:
            progress(1)
    return out


def settings_snippet(weights: dict[str, float], path: Path) -> str:
    """The weights as settings: JSON (``{"WEIGHTS": ...}``) or a Python line for settings.py."""
    import json

    if path.suffix == ".py":
        return (
            "# Best fusion weights measured by `manage.py similarity_evaluate --sweep-weights`\n"
            f"SIMILARITY = {{**SIMILARITY, \"WEIGHTS\": {weights!r}}}\n"
        )
    return json.dumps({"WEIGHTS": weights}, indent=2) + "\n"


# ---------------------------------------------------------------------------------------------
# Query files: a photo or a typed query whose answer is one product
# ---------------------------------------------------------------------------------------------
def evaluate_query_file(
    catalog: EvalCatalog, path: Path, *, ks: Sequence[int] = DEFAULT_KS, ranker: Ranker | None = None,
) -> dict[str, dict[str, float]]:
    """``image,sku`` rows → the ``image`` ranking (visual search); ``text,sku`` rows → ``text``
    (semantic search) and ``lexical``. Fusion needs a product on the query side, so no ``fused``."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        rows = list(reader)
    if "sku" not in fields or not ({"image", "text"} & set(fields)):
        raise EvaluationError(f"{path} needs the columns image,sku or text,sku")
    position = catalog.position()
    ranker = ranker or Ranker(catalog, limit=max(ks))
    depth = max(ks)
    per_ranking: dict[str, list[dict[str, float]]] = {}
    missing = 0
    for row in rows:
        target = position.get((row.get("sku") or "").strip())
        if target is None:
            missing += 1
            continue
        target_pk = catalog.pks[target]
        if (row.get("image") or "").strip():
            image_path = (path.parent / row["image"].strip()).resolve()
            with open(image_path, "rb") as fh:
                result = search_image(
                    fh, model=catalog.spec, limit=depth, name=image_path.name
                )
            ranked = [1.0 if hit.pk == target_pk else 0.0 for hit in result.hits]
            per_ranking.setdefault("image", []).append(query_metrics(ranked, [1.0], ks))
        if (row.get("text") or "").strip():
            text = row["text"].strip()
            result = search_text(text, model=catalog.spec, limit=depth)
            ranked = [1.0 if hit.pk == target_pk else 0.0 for hit in result.hits]
            per_ranking.setdefault("text", []).append(query_metrics(ranked, [1.0], ks))
            lexical = ranker.lexical_matrix()
            scores = np.asarray((ranker.lexical_query(text) @ lexical.T).todense()).ravel()
            order = np.argsort(-scores, kind="stable")[:depth]
            ranked = [1.0 if (c == target and scores[c] > 0) else 0.0 for c in order]
            per_ranking.setdefault("lexical", []).append(query_metrics(ranked, [1.0], ks))
    if missing:
        logger.warning("%d query rows name SKUs that are not indexed; skipped", missing)
    if not per_ranking:
        raise EvaluationError(f"no usable query in {path}")
    return {name: {**mean_metrics(rows), "queries": float(len(rows))} for name, rows in per_ranking.items()}
