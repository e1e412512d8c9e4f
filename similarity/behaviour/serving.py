"""What the behaviour widgets serve: bought together (a product, a cart) and recommended from the
visitor's recent views, blended with content.

For a set of anchor objects with weights, the live model's neighbour rows are summed
(:func:`~.algorithms.score_rows`); Qdrant's behaviour collection then keeps the candidates that
pass the spec's filters (the same :func:`~similarity.query.spec_filter` and payload as content:
in stock, category, ...); content neighbours of the anchors (:func:`~similarity.query.find_similar`)
are blended in with a weight that shrinks as the anchors' history grows:
``score = w · behaviour / max(behaviour) + (1 - w) · content``, ``w = h / (h + HISTORY_HALF)``,
``h`` the (weighted) number of baskets the anchors appear in. An object with no history gets
content alone. Nothing here raises to a page: failures log a warning and give what is left.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import registry
from ..exceptions import IndexUnavailable, SimilarityError
from ..index.base import SearchFilter
from ..query import exclusion_filter, find_similar, load_hits, pick_one_per_group, spec_filter
from ..results import ResultStatus, SimilarHit, SimilarResult
from ..specs import IndexSpec
from . import algorithms
from .artifacts import VECTOR, Artifact, behaviour_index, live_artifact, vector_dim

logger = logging.getLogger(__name__)

#: the anchors' history (baskets) at which behaviour and content weigh the same
HISTORY_HALF = 10.0
#: behaviour candidates passed to the filter per requested hit
CANDIDATES_PER_HIT = 8
#: content neighbours are asked for this many anchors at most (the heaviest)
CONTENT_ANCHORS = 3


def behaviour_weight(history: float) -> float:
    return history / (history + HISTORY_HALF) if history > 0 else 0.0


def _behaviour_candidates(
    spec: IndexSpec, artifact: Artifact, anchors: list[tuple[str, float]], fetch: int, sequential: bool = False,
) -> tuple[dict[str, float], float]:
    """Candidate keys → summed neighbour score, and the anchors' weighted history. With
    ``sequential`` (recent views), the items that followed the anchors in visitors' sequences
    count too, the item–item rows at the weight the training validated (``artifact.mix``)."""
    items = [(artifact.position[k], w) for k, w in anchors if k in artifact.position]
    if not items:
        return {}, 0.0
    rows, weights = [i for i, _ in items], [w for _, w in items]
    if sequential:
        scores = algorithms.sequence_scores(artifact.neighbours, artifact.transitions, rows, weights,
                                            artifact.mix.cooccurrence)
    else:
        scores = algorithms.unit(algorithms.score_rows(artifact.neighbours, rows, weights))
    # anchors keep their scores: a product seen earlier may come back (callers exclude what
    # must never be shown: the current product, the cart's items)
    history = float(sum(artifact.counts[i] * w for i, w in items) / max(sum(w for _, w in items), 1e-9))
    positive = np.flatnonzero(scores > 0)
    best = positive[np.argsort(-scores[positive])[:fetch]]
    return {str(artifact.keys[i]): float(scores[i]) for i in best}, history


def _filtered(spec: IndexSpec, keys: list[str], anchor_payload: dict[str, Any] | None, anchor_point: str | None,
              filters: dict[str, Any]) -> list[str]:
    """The candidate keys that pass the spec's filters in the behaviour collection, as content."""
    if not keys:
        return []
    base = spec_filter(spec, filters, anchor_payload)
    if anchor_point is not None and anchor_payload is not None:
        base = exclusion_filter(base, anchor_payload, anchor_point, exclude_variants=True)
    ids = {spec.point_id(spec.to_pk(k)): k for k in keys}
    search = SearchFilter(match=base.match, match_any=base.match_any, exclude=base.exclude,
                          exclude_ids=base.exclude_ids, ids=frozenset(ids))
    hits = behaviour_index(spec).query(VECTOR, _probe(spec), limit=len(ids), filter=search)
    passed = {h.id for h in hits}
    return [ids[i] for i in ids if i in passed]


def _probe(spec: IndexSpec) -> list[float]:
    """A query vector for id-restricted lookups: every candidate comes back, the order is ours."""
    artifact = live_artifact(spec)
    return [1.0] * vector_dim(len(artifact) if artifact is not None else 0)


def _content(anchors: list[Any], limit: int, filters: dict[str, Any]) -> dict[Any, tuple[float, Any]]:
    """pk → (best content score, object) over the anchors' content neighbours."""
    found: dict[Any, tuple[float, Any]] = {}
    for obj in anchors[:CONTENT_ANCHORS]:
        try:
            result = find_similar(obj, limit=limit, **filters)
        except SimilarityError as exc:
            logger.warning("content neighbours of %s: %s", obj.pk, exc)
            continue
        for hit in result.hits:
            if hit.pk not in found or found[hit.pk][0] < hit.score:
                found[hit.pk] = (hit.score, hit.object)
    return found


def blend(
    anchors: list[tuple[Any, float]], *, limit: int = 8, exclude: Iterable[Any] = (),
    relative_to: Any = None, filters: dict[str, Any] | None = None, content: bool = True,
    sequential: bool = False,
) -> SimilarResult:
    """Objects to show for weighted ``anchors`` (objects of one spec): behaviour blended with
    content. ``exclude``: objects never shown (their groups neither); ``relative_to``: the object
    relative filters (``same_category=True``) compare with; ``sequential``: anchors are views,
    oldest first, so what visitors looked at next counts too, and their weights are the live
    model's recency weights (the weights given are ignored)."""
    filters = dict(filters or {})
    present = [obj for obj, _w in anchors if obj is not None and getattr(obj, "pk", None) is not None]
    if not present:
        return SimilarResult(ResultStatus.OK, [])
    spec = registry.get_spec(type(present[0]))
    artifact = live_artifact(spec)
    if sequential:
        anchors = list(zip([obj for obj, _w in anchors], recency_weights(len(anchors), artifact), strict=True))
    anchors = [(obj, w) for obj, w in anchors if obj is not None and getattr(obj, "pk", None) is not None]
    excluded = list(exclude)
    groups = {spec.get_group(obj) for obj in excluded}
    keys = [(spec.object_key(obj.pk), w) for obj, w in anchors]
    behaviour: dict[str, float] = {}
    history = 0.0
    status = ResultStatus.OK
    try:
        if artifact is not None:
            raw, history = _behaviour_candidates(
                spec, artifact, keys, fetch=limit * CANDIDATES_PER_HIT, sequential=sequential
            )
            anchor = relative_to if relative_to is not None else anchors[0][0]
            point = spec.point_id(anchor.pk)
            payload = behaviour_index(spec).retrieve([point]).get(point)
            passed = _filtered(spec, list(raw), payload.payload if payload else None,
                               point if relative_to is not None else None, filters)
            top = max((raw[k] for k in passed), default=0.0)
            behaviour = {k: raw[k] / top for k in passed} if top > 0 else {}
    except IndexUnavailable as exc:
        logger.warning("behaviour index of %s unavailable: %s", spec.label, exc)
        status = ResultStatus.UNAVAILABLE
    weight = behaviour_weight(history) if behaviour else 0.0
    scored: dict[Any, float] = {spec.to_pk(k): weight * s for k, s in behaviour.items()}
    if content and weight < 1.0:
        ordered = [obj for obj, _w in sorted(anchors, key=lambda a: -a[1])]
        for pk, (score, _obj) in _content(ordered, limit * 2, filters).items():
            scored[pk] = scored.get(pk, 0.0) + (1 - weight) * score
    ranked = sorted(scored.items(), key=lambda kv: -kv[1])
    rows = [(s, {"behaviour": behaviour.get(spec.object_key(pk), 0.0)}, spec.object_key(pk)) for pk, s in ranked]
    hits = [h for h in load_hits(spec, rows, filters) if spec.get_group(h.object) not in groups]
    hits = pick_one_per_group(hits, lambda h: spec.get_group(h.object), limit)
    return SimilarResult(status if not hits else ResultStatus.OK, hits)


def bought_together(obj: Any, *, limit: int = 8, **filters: Any) -> SimilarResult:
    """Complements of ``obj``: bought with it, never itself or its variants."""
    return blend([(obj, 1.0)], limit=limit, exclude=[obj], relative_to=obj, filters=filters)


def bought_together_cart(items: Iterable[Any], *, limit: int = 8, **filters: Any) -> SimilarResult:
    """Complements of a cart: bought with its items, never the items already chosen."""
    objects = [getattr(item, "object", item) for item in items]
    objects = [o for o in objects if o is not None]
    return blend([(o, 1.0) for o in objects], limit=limit, exclude=objects, filters=filters)


def recency_weights(count: int, artifact: Artifact | None = None) -> list[float]:
    """Weights of ``count`` views, oldest first: each a fixed share (validated at training time,
    ``artifact.mix.recency``) of the next newer one's."""
    return (artifact.mix if artifact is not None else algorithms.Mix()).weights(count)


def recommended_from_views(
    spec: Any, keys: list[str], *, current: Any = None, limit: int = 8, **filters: Any,
) -> SimilarResult:
    """From viewed object keys (oldest first): recency-weighted, never ``current``; objects seen
    earlier may come back (shoppers return to them). How fast older views fade and how much the
    item–item term weighs next to the transitions is the live model's validated mix."""
    spec = registry.get_spec(spec)
    if not keys:
        return SimilarResult(ResultStatus.OK, [])
    objects = spec.get_queryset().in_bulk([spec.to_pk(k) for k in keys])
    anchors = [(objects.get(spec.to_pk(k)), 1.0) for k in keys]  # blend weighs them by recency
    exclude = [current] if current is not None else []
    return blend(anchors, limit=limit, exclude=exclude, filters=filters, sequential=True)


def popular(spec: Any, *, limit: int, exclude_keys: Iterable[str] = ()) -> list[SimilarHit]:
    """The live model's most frequent objects (the evaluation's popularity baseline)."""
    spec = registry.get_spec(spec)
    artifact = live_artifact(spec)
    if artifact is None:
        return []
    skip = set(exclude_keys)
    order = np.argsort(-artifact.counts)
    keys = [str(artifact.keys[i]) for i in order[: limit + len(skip)] if str(artifact.keys[i]) not in skip]
    return load_hits(spec, [(float(artifact.counts[artifact.position[k]]), {}, k) for k in keys[:limit]])
