"""Category suggestions: a similarity-weighted vote of an object's nearest neighbours, blended
with a classifier learned from the shop's own labelled objects.

The neighbours are those :func:`~similarity.query.find_similar` returns (fused image + text
cosine, variants excluded, no merchandising), their categories the spec's ``get_taxonomy``. Each
neighbour votes for its category path with its fused score sharpened (:data:`SHARPEN`). For an
object without a category, per level of the tree, nearest class centroids on the stored vectors
(:class:`CategoryClassifier`, learned from every object that has a category) give each path
prefix a probability, blended with the vote's share (:data:`CLASSIFIER_WEIGHT`); with fewer than
:data:`MIN_LABELLED` labelled objects the vote decides alone. A level's suggestion is the path
prefix with the most weight under the level above it (top-down, so the path stays a real branch
of the tree). The confidence of a level is its winner's blended share. The suggested path stops
at the deepest level whose share is still a majority (:data:`MIN_SHARE`); ``apply_suggestion``
writes it through ``spec.apply_category``.

The same :func:`vote` and :class:`CategoryClassifier` serve the offline evaluation
(``similarity_evaluate --task categories``), so what is measured is what staff see.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import registry
from .exceptions import IndexUnavailable
from .query import find_similar

logger = logging.getLogger(__name__)

#: neighbours that vote, and the power their fused score is raised to as a vote weight. Fused
#: cosines of near neighbours sit in a narrow band (0.6-0.9), so raw scores would weigh them
#: almost alike; ``score ** 8`` (about a softmax at temperature 1/8) lets the closest count more.
#: Both chosen on one half of flipkart-1050's top-level categories and checked on the other
#: (docs/staff-tools.md).
NEIGHBOURS = 5
SHARPEN = 8
#: a level is part of the suggestion while its winner holds more than half of the votes cast there
MIN_SHARE = 0.5
SEPARATOR = " > "

#: the classifier's share of a level's blended weight (the vote has the rest), and the softmax
#: temperature over its centroid cosines: chosen on one half of flipkart-1050's top-level
#: categories and checked on the other (``python -m bench.category_blend``, docs/staff-tools.md)
CLASSIFIER_WEIGHT = 0.2
CLASSIFIER_TEMPERATURE = 0.05
#: fewer labelled objects than this (overall, or at a level): that level is left to the vote
MIN_LABELLED = 50
#: a cached classifier is trained again after this long, or at once when the index changes
CLASSIFIER_TTL = 3600.0

#: per level (0 = root): {path prefix: probability}
LevelProbabilities = list[dict[tuple[str, ...], float]]


@dataclass
class CategorySuggestion:
    """The suggested path (root first), its confidence, and per level the ranked options."""

    path: list[str]
    confidence: float
    #: per level (0 = root): [(path prefix, share), ...] best first
    levels: list[list[tuple[tuple[str, ...], float]]] = field(default_factory=list)
    neighbours: int = 0

    @property
    def label(self) -> str:
        return SEPARATOR.join(self.path)

    def alternatives(self, limit: int = 3) -> list[dict[str, Any]]:
        """Other full paths at the deepest level, for the JSON and the admin."""
        if not self.levels:
            return []
        depth = max(len(self.path), 1) - 1
        return [
            {"category": SEPARATOR.join(prefix), "confidence": round(share, 4)}
            for prefix, share in self.levels[depth][1 : limit + 1]
        ]

    def as_dict(self) -> dict[str, Any]:
        return {"category": self.label, "confidence": round(self.confidence, 4),
                "alternatives": self.alternatives()}


def vote(
    neighbours: Iterable[tuple[Sequence[str], float]], *, min_share: float = MIN_SHARE, sharpen: float = SHARPEN,
    prior: LevelProbabilities | None = None, prior_weight: float = CLASSIFIER_WEIGHT,
) -> CategorySuggestion | None:
    """The suggestion from ``(category path, similarity)`` pairs (paths root first; empty ones
    and non-positive similarities do not vote; each votes with ``similarity ** sharpen``),
    blended per level with ``prior`` (a classifier's probabilities, :meth:`CategoryClassifier.predict`):
    ``(1 - prior_weight) * vote share + prior_weight * probability``; a level only one of them
    covers is decided by that one. ``None`` when nobody votes and there is no prior."""
    votes = [(tuple(path), float(sim) ** sharpen) for path, sim in neighbours if path and sim > 0]
    prior = prior if prior and prior_weight > 0 else []
    if not votes and not prior:
        return None
    levels: list[list[tuple[tuple[str, ...], float]]] = []
    chosen: tuple[str, ...] = ()
    depth = max([len(p) for p, _ in votes] + [len(prior)])
    for level in range(1, depth + 1):
        # every prefix at this level: the ranking (for accuracy@3), the winner under ``chosen``
        weights: dict[tuple[str, ...], float] = {}
        for voted, sim in votes:
            if len(voted) >= level:
                weights[voted[:level]] = weights.get(voted[:level], 0.0) + sim
        shares = _normalised(weights)
        probabilities = prior[level - 1] if len(prior) >= level else {}
        if shares and probabilities:
            shares = {
                prefix: (1 - prior_weight) * shares.get(prefix, 0.0) + prior_weight * probabilities.get(prefix, 0.0)
                for prefix in shares.keys() | probabilities.keys()
            }
        elif probabilities:
            shares = dict(probabilities)
        ranked = sorted((row for row in shares.items() if row[1] > 0), key=lambda row: (-row[1], row[0]))
        under = [row for row in ranked if row[0][:-1] == chosen]
        if not under:
            break
        # the winner under the level above first, then the rest by weight
        ranked = [under[0], *(row for row in ranked if row[0] != under[0][0])]
        levels.append(ranked)
        chosen = under[0][0]
    path: list[str] = []
    confidence = 0.0
    for ranked in levels:
        prefix, share = ranked[0]
        if path and share <= min_share:
            break
        path, confidence = list(prefix), share
    return CategorySuggestion(path, confidence, levels, neighbours=len(votes))


def _normalised(weights: Mapping[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
    total = sum(weights.values())
    return {prefix: weight / total for prefix, weight in weights.items()} if total > 0 else {}


# ---------------------------------------------------------------------------------------------
# The classifier: learned from the shop's own labelled objects, on their stored vectors
# ---------------------------------------------------------------------------------------------
def features(vectors: Mapping[str, Any], dims: Mapping[str, int]) -> np.ndarray:
    """One object's classifier input: each modality's stored vector scaled to unit length, side
    by side in ``dims`` order (zeros for a modality it lacks)."""
    rows = {}
    for modality, dim in dims.items():
        vector = np.asarray(vectors.get(modality, ()), dtype=np.float32).reshape(-1)
        rows[modality] = vector.reshape(1, -1) if vector.shape == (dim,) else np.zeros((1, dim), dtype=np.float32)
    return feature_matrix(rows)[0]


def feature_matrix(vectors: Mapping[str, np.ndarray]) -> np.ndarray:
    """:func:`features` for many objects at once (``vectors``: modality → (n, dim), zero rows
    where missing; modalities in sorted order), e.g. an evaluation catalog's."""
    parts = []
    for modality in sorted(vectors):
        matrix = np.asarray(vectors[modality], dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        parts.append(np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0))
    return np.concatenate(parts, axis=1)


@dataclass
class CategoryClassifier:
    """Nearest class centroids, per level of the tree: each path prefix is the mean of its
    labelled objects' :func:`features` (scaled to unit length), and an object's probability for
    it a softmax of its cosines to the level's centroids at :data:`CLASSIFIER_TEMPERATURE`.
    Levels with fewer than :data:`MIN_LABELLED` labelled objects are left out (the vote decides
    there). Learned in one pass over the vectors, holding only the per-prefix sums (milliseconds
    and a few MB for thousands of objects)."""

    dims: dict[str, int]
    #: per level: (the prefixes, their unit centroids: (prefixes, features))
    levels: list[tuple[list[tuple[str, ...]], np.ndarray]]
    trained_on: int
    temperature: float = CLASSIFIER_TEMPERATURE

    @classmethod
    def fit(cls, batches: Iterable[tuple[Mapping[str, np.ndarray], Sequence[Sequence[str]]]], *,
            temperature: float = CLASSIFIER_TEMPERATURE, min_labelled: int | None = None) -> CategoryClassifier | None:
        """Learn from ``(vectors, paths)`` batches (``vectors``: modality → (n, dim), zero rows
        where missing; ``paths``: each row's category path, [] = none, not learned from).
        ``None`` when fewer than ``min_labelled`` (default :data:`MIN_LABELLED`) rows have a path."""
        min_labelled = MIN_LABELLED if min_labelled is None else min_labelled
        dims: dict[str, int] = {}
        # level → prefix → modality → sum of the unit vectors; level → prefix → count
        sums: dict[int, dict[tuple[str, ...], dict[str, np.ndarray]]] = {}
        counts: dict[int, dict[tuple[str, ...], int]] = {}
        for vectors, paths in batches:
            rows = [i for i, path in enumerate(paths) if path]
            if not rows:
                continue
            for modality, matrix in vectors.items():
                dims.setdefault(modality, matrix.shape[1])
            unit = {m: feature_matrix({m: np.asarray(v)[rows]}) for m, v in vectors.items()}
            for n, i in enumerate(rows):
                for level in range(1, len(paths[i]) + 1):
                    prefix = tuple(paths[i][:level])
                    counts.setdefault(level, {})
                    counts[level][prefix] = counts[level].get(prefix, 0) + 1
                    held = sums.setdefault(level, {}).setdefault(prefix, {})
                    for m, matrix in unit.items():
                        held[m] = held[m] + matrix[n] if m in held else matrix[n].astype(np.float64)
        labelled = sum(counts.get(1, {}).values())
        if labelled < min_labelled:
            return None
        dims = dict(sorted(dims.items()))
        levels: list[tuple[list[tuple[str, ...]], np.ndarray]] = []
        for level in sorted(counts):
            if sum(counts[level].values()) < min_labelled:
                break
            classes = sorted(counts[level])
            centroids = np.stack([
                np.concatenate([sums[level][prefix].get(m, np.zeros(dim)) for m, dim in dims.items()])
                for prefix in classes
            ])
            norms = np.linalg.norm(centroids, axis=1, keepdims=True)
            levels.append((classes, np.divide(centroids, norms, out=np.zeros_like(centroids), where=norms > 0)))
        return cls(dims, levels, trained_on=labelled, temperature=temperature)

    def predict(self, matrix: np.ndarray) -> list[LevelProbabilities]:
        """Per row of ``matrix`` (:func:`feature_matrix` rows), per level: {path prefix: probability}."""
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        unit = np.divide(matrix, norms, out=np.zeros(matrix.shape, dtype=np.float64), where=norms > 0)
        out: list[LevelProbabilities] = [[] for _ in range(len(matrix))]
        for classes, centroids in self.levels:
            logits = unit @ centroids.T / self.temperature
            probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            for row, p in zip(out, probabilities, strict=True):
                row.append({classes[k]: float(p[k]) for k in np.flatnonzero(p > 1e-4)})
        return out

    def predict_vectors(self, vectors: Mapping[str, Any]) -> LevelProbabilities:
        """:meth:`predict` for one object's stored vectors (modality → vector)."""
        return self.predict(features(vectors, self.dims)[None, :])[0]


def train_classifier(model: Any = None, *, batch_size: int = 256) -> CategoryClassifier | None:
    """A classifier learned from every indexed object of the spec that has a category, in keyset
    pages (``None``: fewer than :data:`MIN_LABELLED` of them, or the index is unavailable)."""
    from .backlog import iter_batches

    spec = registry.get_spec(model)
    index = registry.vector_index(spec)
    queryset = spec.get_queryset()
    started = time.perf_counter()

    def batches() -> Iterator[tuple[dict[str, np.ndarray], list[list[str]]]]:
        for batch in iter_batches(queryset, batch_size):
            paths = {obj.pk: spec.get_taxonomy(obj) for obj in queryset.filter(pk__in=batch)}
            labelled = [pk for pk in batch if paths.get(pk)]
            stored = index.retrieve([spec.point_id(pk) for pk in labelled], with_vectors=True)
            points = [(pk, stored[spec.point_id(pk)]) for pk in labelled if spec.point_id(pk) in stored]
            if not points:
                continue
            vectors: dict[str, np.ndarray] = {}
            for modality in sorted({m for _, point in points for m in point.vectors}):
                dim = next(len(point.vectors[modality]) for _, point in points if modality in point.vectors)
                matrix = np.zeros((len(points), dim), dtype=np.float32)
                for row, (_, point) in enumerate(points):
                    if len(point.vectors.get(modality, ())) == dim:
                        matrix[row] = point.vectors[modality]
                vectors[modality] = matrix
            yield vectors, [paths[pk] for pk, _ in points]

    try:
        classifier = CategoryClassifier.fit(batches())
    except IndexUnavailable as exc:
        logger.warning("no category classifier for %s: %s", spec.label, exc)
        return None
    logger.info("category classifier for %s: %s labelled objects, %.1f s", spec.label,
                classifier.trained_on if classifier else "too few", time.perf_counter() - started)
    return classifier


_cache: dict[str, tuple[tuple[str, int], float, CategoryClassifier | None]] = {}
_cache_lock = threading.Lock()


def category_classifier(model: Any = None) -> CategoryClassifier | None:
    """The spec's classifier, trained once per process and kept until the index changes (another
    generation, or another number of points) or :data:`CLASSIFIER_TTL` passes, so categories
    staff set since are learned too. ``None`` while too few objects are labelled."""
    spec = registry.get_spec(model)
    index = registry.vector_index(spec)
    try:
        key = (index.generation, index.count())
    except IndexUnavailable as exc:
        logger.warning("no category classifier for %s: %s", spec.label, exc)
        return None
    with _cache_lock:  # one training per process at a time, not one per concurrent request
        cached = _cache.get(spec.label)
        if cached is not None and cached[0] == key and time.monotonic() - cached[1] < CLASSIFIER_TTL:
            return cached[2]
        classifier = train_classifier(spec)
        _cache[spec.label] = (key, time.monotonic(), classifier)
        return classifier


def forget_classifiers() -> None:
    """Drop the cached classifiers (tests; after bulk category changes)."""
    with _cache_lock:
        _cache.clear()


#: ``suggest_category(classifier=...)`` default: the spec's cached :func:`category_classifier`
CACHED: Any = object()


def suggest_category(obj: Any, *, neighbours: int = NEIGHBOURS,
                     classifier: CategoryClassifier | None = CACHED) -> CategorySuggestion | None:
    """The suggestion for ``obj`` from its indexed neighbours and, when ``obj`` has no category
    yet, the classifier (``None``: not indexed, or nothing to suggest from).

    An object that has a category was one the classifier learned from, so the classifier would
    only repeat it: its suggestion (a second opinion on a doubtful category) is the vote alone,
    which never counts an object's own category. ``classifier=None``: the vote alone as well."""
    spec = registry.get_spec(type(obj))
    result = find_similar(obj, limit=neighbours, merchandise=False)
    if not result.ok:
        logger.info("no category suggestion for %s %s: %s", spec.label, obj.pk, result.message)
        return None
    prior = None
    if classifier is not None and not spec.get_taxonomy(obj):
        if classifier is CACHED:
            classifier = category_classifier(spec)
        prior = _prior(spec, obj, classifier) if classifier is not None else None
    return vote(((spec.get_taxonomy(hit.object), hit.score) for hit in result), prior=prior)


def _prior(spec: Any, obj: Any, classifier: CategoryClassifier) -> LevelProbabilities | None:
    point_id = spec.point_id(obj.pk)
    try:
        stored = registry.vector_index(spec).retrieve([point_id], with_vectors=True).get(point_id)
    except IndexUnavailable as exc:
        logger.warning("category suggestion for %s %s without the classifier: %s", spec.label, obj.pk, exc)
        return None
    return classifier.predict_vectors(stored.vectors) if stored is not None and stored.vectors else None


def suggest_categories(model: Any = None, *, only_missing: bool = False,
                       neighbours: int = NEIGHBOURS) -> Iterable[tuple[Any, CategorySuggestion | None]]:
    """``(object, suggestion)`` for every object of the spec (those without a category only,
    with ``only_missing``), in keyset pages; one classifier for the whole run, trained first."""
    from .backlog import iter_batches

    spec = registry.get_spec(model)
    classifier = train_classifier(spec)
    queryset = spec.get_queryset()
    for batch in iter_batches(queryset, 256):
        for obj in queryset.filter(pk__in=batch).order_by("pk"):
            if only_missing and spec.get_taxonomy(obj):
                continue
            yield obj, suggest_category(obj, neighbours=neighbours, classifier=classifier)


def apply_suggestion(obj: Any, suggestion: CategorySuggestion) -> None:
    """Write the suggested path through the spec (``spec.apply_category``)."""
    registry.get_spec(type(obj)).apply_category(obj, list(suggestion.path))
