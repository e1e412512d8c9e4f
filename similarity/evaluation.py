"""Offline evaluation of similarity quality on the indexed catalog (``similarity_evaluate``).

The vectors are read once from the vector index and ranked with numpy; ``fused`` goes through
:func:`similarity.services.fuse_scores` over the same candidate set that
:func:`~similarity.services.find_similar` builds (the union of each modality's top
``max(SIMILARITY["CANDIDATES"], 4 * k)``), so it measures exactly what the widget shows.

Relevance comes from a :class:`Relevance`: the category tree at a depth, a labels file, or a
judgments file. Query files (a photo or a typed query whose answer is one product) go through
:func:`similarity.services.search_image` / :func:`~similarity.services.search_text`.
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

from . import registry, services
from .conf import get_settings
from .exceptions import SimilarityError

logger = logging.getLogger(__name__)

RANKINGS = ("image", "text", "fused", "lexical")
DEFAULT_KS = (1, 5, 10)
#: queries scored per numpy block (bounds memory on large catalogs: block × catalog floats)
BLOCK = 256


class EvaluationError(SimilarityError):
    """The evaluation cannot run as asked (no products indexed, a bad labels file...)."""


# ---------------------------------------------------------------------------------------------
# The catalog as the evaluation sees it
# ---------------------------------------------------------------------------------------------
@dataclass
class EvalCatalog:
    """Every indexed object of one spec: identity, text, category path and vectors."""

    pks: list[int]
    skus: list[str]
    titles: list[str]
    texts: list[str]
    categories: list[list[str]]  # category names from the top level down ([] = none)
    groups: np.ndarray
    vectors: dict[str, np.ndarray]  # modality → (n, dim), zero rows where missing
    present: dict[str, np.ndarray]  # modality → (n,) bool
    objects: list[Any] = field(repr=False, default_factory=list)
    spec: Any = field(repr=False, default=None)

    def __len__(self) -> int:
        return len(self.pks)

    def position(self) -> dict[str, int]:
        return {sku: i for i, sku in enumerate(self.skus)}


def load_catalog(model: Any = None, *, index: Any = None, batch_size: int = 256) -> EvalCatalog:
    """Read the objects (keyset pages) and their stored vectors from the index."""
    spec = services._spec(model)
    index = index or registry.vector_index()
    objects: list[Any] = []
    stored: dict[str, Any] = {}
    queryset = spec.get_queryset()
    for batch in services.iter_batches(queryset, batch_size):
        page = list(queryset.filter(pk__in=batch).order_by("pk"))
        objects.extend(page)
        stored.update(index.retrieve([spec.point_id(o.pk) for o in page], with_vectors=True))
    objects = [o for o in objects if spec.point_id(o.pk) in stored]
    if not objects:
        raise EvaluationError(
            "no product is indexed; run `manage.py similarity_reindex --all` before evaluating."
        )
    n = len(objects)
    vectors: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    points = [stored[spec.point_id(o.pk)] for o in objects]
    for modality in ("image", "text"):
        dim = next((len(p.vectors[modality]) for p in points if modality in p.vectors), 0)
        matrix = np.zeros((n, dim), dtype=np.float32)
        have = np.zeros(n, dtype=bool)
        for i, point in enumerate(points):
            if modality in point.vectors:
                matrix[i] = point.vectors[modality]
                have[i] = True
        vectors[modality], present[modality] = matrix, have
    return EvalCatalog(
        pks=[o.pk for o in objects],
        skus=[str(getattr(o, "sku", o.pk)) for o in objects],
        titles=[str(getattr(o, "title", o)) for o in objects],
        texts=[spec.get_text(o) for o in objects],
        categories=[_category_names(o) for o in objects],
        groups=np.array([spec.get_group(o) for o in objects]),
        vectors=vectors, present=present, objects=objects, spec=spec,
    )


def _category_names(obj: Any) -> list[str]:
    category = getattr(obj, "category", None)
    if category is None:
        return []
    if hasattr(category, "ancestors"):
        return [c.name for c in category.ancestors()]
    return [str(category)]


# ---------------------------------------------------------------------------------------------
# Relevance
# ---------------------------------------------------------------------------------------------
@dataclass
class Relevance:
    """Graded relevance between catalog positions. ``labels``: same non-empty label = gain 1;
    ``pairs``: explicit (query, candidate) → gain (judgments)."""

    name: str
    labels: np.ndarray | None = None
    pairs: dict[int, dict[int, float]] | None = None
    #: the label strings a query's text would leak (for the leak warning)
    label_names: list[str] | None = None

    def gains(self, queries: np.ndarray, n: int) -> np.ndarray:
        out = np.zeros((len(queries), n), dtype=np.float32)
        if self.labels is not None:
            labels = self.labels
            out[:] = (labels[queries][:, None] == labels[None, :]) & (labels[queries][:, None] != "")
        elif self.pairs is not None:
            for row, q in enumerate(queries):
                for c, gain in self.pairs.get(int(q), {}).items():
                    out[row, c] = gain
        out[np.arange(len(queries)), queries] = 0.0  # the query itself is never a result
        return out

    def query_candidates(self, n: int) -> np.ndarray:
        """Positions that can be asked: they have at least one relevant other item."""
        if self.labels is not None:
            values, counts = np.unique(self.labels, return_counts=True)
            many = {v for v, c in zip(values, counts, strict=True) if v != "" and c > 1}
            return np.array([i for i, label in enumerate(self.labels) if label in many], dtype=int)
        assert self.pairs is not None
        return np.array(sorted(q for q, row in self.pairs.items() if any(g > 0 for g in row.values())),
                        dtype=int)


def category_relevance(catalog: EvalCatalog, level: int) -> Relevance:
    if level < 1:
        raise EvaluationError("--level counts from 1 (the top-level category)")
    labels = np.array([" > ".join(c[:level]) if len(c) >= level else "" for c in catalog.categories])
    if not (labels != "").any():
        raise EvaluationError(f"no product has a category {level} levels deep")
    names = [c[level - 1] if len(c) >= level else "" for c in catalog.categories]
    return Relevance(f"same category at level {level}", labels=labels, label_names=names)


def labels_relevance(catalog: EvalCatalog, path: Path) -> Relevance:
    rows = _read_csv(path, ("sku", "label"))
    by_sku = {row["sku"].strip(): row["label"].strip() for row in rows}
    labels = np.array([by_sku.get(sku, "") for sku in catalog.skus])
    if not (labels != "").any():
        raise EvaluationError(f"none of the SKUs in {path} is in the indexed catalog")
    return Relevance(f"same label in {path.name}", labels=labels, label_names=list(labels))


def judgments_relevance(catalog: EvalCatalog, path: Path) -> Relevance:
    rows = _read_csv(path, ("sku_a", "sku_b", "relevance"))
    position = catalog.position()
    pairs: dict[int, dict[int, float]] = {}
    skipped = 0
    for row in rows:
        a, b = position.get(row["sku_a"].strip()), position.get(row["sku_b"].strip())
        if a is None or b is None:
            skipped += 1
            continue
        try:
            gain = float(row["relevance"])
        except ValueError:
            raise EvaluationError(f"{path}: relevance {row['relevance']!r} is not a number") from None
        pairs.setdefault(a, {})[b] = gain
    if skipped:
        logger.warning("%d judgments name SKUs that are not indexed; skipped", skipped)
    if not pairs:
        raise EvaluationError(f"no judgment in {path} names two indexed products")
    return Relevance(f"judgments in {path.name}", pairs=pairs)


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise EvaluationError(f"{path} needs the columns {', '.join(columns)} (missing {missing})")
            return list(reader)
    except OSError as exc:
        raise EvaluationError(f"cannot read {path}: {exc.strerror or exc}") from exc


def label_leak(catalog: EvalCatalog, relevance: Relevance, queries: np.ndarray) -> float:
    """Share of queries whose encoded text contains the label it is judged by."""
    if not relevance.label_names or not len(queries):
        return 0.0
    hits = 0
    for q in queries:
        label = relevance.label_names[q].strip().lower()
        if label and label in catalog.texts[q].lower():
            hits += 1
    return hits / len(queries)


# ---------------------------------------------------------------------------------------------
# Rankings: a (queries, catalog) score block; -inf = never shown
# ---------------------------------------------------------------------------------------------
class Ranker:
    """Scores blocks of queries against the whole catalog for each ranking."""

    def __init__(self, catalog: EvalCatalog, *, weights: dict[str, float] | None = None,
                 normalisation: str | None = None, candidates: int | None = None, limit: int = 10) -> None:
        self.catalog = catalog
        self.weights = dict(weights or get_settings().weights)
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
        groups = self.catalog.groups
        mask = groups[queries][:, None] == groups[None, :]  # variants (and the object itself)
        mask[np.arange(len(queries)), queries] = True
        return mask

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
        return services.fuse_scores(masked, weights, normalisation=normalisation or self.normalisation)


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
        picked: list[int] = []
        seen: set[Any] = set()
        for c in order[r]:
            if not np.isfinite(scores[r, c]):
                break
            if groups is not None:
                if groups[c] in seen:
                    continue
                seen.add(groups[c])
            picked.append(int(c))
            if len(picked) == k:
                break
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
                result = services.search_image(
                    fh, model=catalog.spec.label, limit=depth, name=image_path.name
                )
            ranked = [1.0 if hit.pk == target_pk else 0.0 for hit in result.hits]
            per_ranking.setdefault("image", []).append(query_metrics(ranked, [1.0], ks))
        if (row.get("text") or "").strip():
            text = row["text"].strip()
            result = services.search_text(text, model=catalog.spec.label, limit=depth)
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



# ---------------------------------------------------------------------------------------------
# Plots (matplotlib, imported only here)
# ---------------------------------------------------------------------------------------------
def write_plots(
    catalog: EvalCatalog, result: EvalResult, relevance: Relevance, folder: Path, *,
    sweep: list[tuple[dict[str, float], dict[str, float]]] | None = None, sweep_metric: str = "precision@10",
    examples: int = 5, seed: int = 0,
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    folder.mkdir(parents=True, exist_ok=True)
    written = [_plot_curves(result, relevance, folder / "precision_at_k.png")]
    written.append(_plot_embedding_map(catalog, folder / "embedding_map.png", seed=seed))
    if result.top:
        written.append(
            _plot_examples(catalog, result, relevance, folder / "examples.png", rows=examples, seed=seed)
        )
    if sweep:
        written.append(_plot_sweep(sweep, sweep_metric, folder / "weight_sweep.png"))
    return written


def _finish_plot(fig: Any, ax: Any, path: Path) -> Path:
    """Grid, legend, save and close: the same for every line chart."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_curves(result: EvalResult, relevance: Relevance, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for ranking, curve in result.curves.items():
        ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=ranking)
    ax.set_xlabel("k")
    ax.set_ylabel("precision@k")
    ax.set_title(f"precision@k, {relevance.name} ({len(result.queries)} queries)")
    return _finish_plot(fig, ax, path)


def _plot_embedding_map(catalog: EvalCatalog, path: Path, *, seed: int, max_points: int = 3000) -> Path:
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    tops = np.array([c[0] if c else "(none)" for c in catalog.categories])
    rng = np.random.default_rng(seed)
    chosen = np.arange(len(catalog))
    if len(chosen) > max_points:
        chosen = np.sort(rng.choice(chosen, max_points, replace=False))
    names = sorted(set(tops[chosen].tolist()))
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    modalities = [m for m in ("image", "text") if catalog.present[m][chosen].sum() > 2]
    fig, axes = plt.subplots(1, len(modalities), figsize=(6.5 * len(modalities), 6), squeeze=False)
    for ax, modality in zip(axes[0], modalities, strict=True):
        rows = chosen[catalog.present[modality][chosen]]
        matrix = catalog.vectors[modality][rows]
        components = min(50, matrix.shape[1], len(rows) - 1)
        reduced = PCA(n_components=components, random_state=seed).fit_transform(matrix)
        perplexity = min(30.0, max(2.0, (len(rows) - 1) / 3))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)
        for i, name in enumerate(names):
            mask = tops[rows] == name
            ax.scatter(xy[mask, 0], xy[mask, 1], s=8, color=colours(i % colours.N), label=name)
        ax.set_title(f"{modality} embeddings (t-SNE), coloured by top-level category")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, markerscale=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _thumbnail(catalog: EvalCatalog, position: int, size: int = 160) -> Any:
    from PIL import Image

    from .encoders.images import open_image

    for source in catalog.spec.get_images(catalog.objects[position])[:1]:
        try:
            with source.open() as fh:
                image = open_image(fh, name=source.name, max_pixels=get_settings().max_image_pixels)
            image.thumbnail((size, size))
            return image
        except (OSError, SimilarityError) as exc:
            logger.info("no thumbnail for %s: %s", source.name, exc)
    return Image.new("RGB", (size, size), (235, 235, 235))


def _plot_examples(catalog: EvalCatalog, result: EvalResult, relevance: Relevance, path: Path, *,
                   rows: int, seed: int, ranking: str = "fused") -> Path:
    import matplotlib.pyplot as plt

    ranking = ranking if ranking in result.top else next(iter(result.top))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(result.queries), size=min(rows, len(result.queries)), replace=False)
    fig, axes = plt.subplots(len(picks), 6, figsize=(13, 2.5 * len(picks)), squeeze=False)
    for row, pick in enumerate(picks):
        query = int(result.queries[pick])
        gains = relevance.gains(np.array([query]), len(catalog))[0]
        cells = [(query, None)] + [(int(c), gains[c] > 0) for c in result.top[ranking][pick][:5]]
        for col, (position, relevant) in enumerate(cells):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if position < 0:
                ax.axis("off")
                continue
            ax.imshow(_thumbnail(catalog, position))
            title = catalog.titles[position]
            ax.set_title((title[:28] + "…") if len(title) > 29 else title, fontsize=7)
            colour = "black" if relevant is None else ("tab:green" if relevant else "tab:red")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(1.5 if relevant is None else 3)
        axes[row][0].set_ylabel("query", fontsize=8)
    fig.suptitle(f"{ranking}: query → top 5 (green = relevant, red = not; {relevance.name})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


def _plot_sweep(sweep: list[tuple[dict[str, float], dict[str, float]]], metric: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [w["image"] for w, _m in sweep]
    for name in (metric, "mrr"):
        ax.plot(xs, [m[name] for _w, m in sweep], marker="o", markersize=3, label=name)
    ax.set_xlabel("image weight (text = 1 - image)")
    ax.set_title("fused ranking by fusion weights")
    return _finish_plot(fig, ax, path)
