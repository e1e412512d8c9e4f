"""Reading similar objects: :func:`find_similar`, its filters and the candidate ranking.

The rules that decide what is shown (leave out the object and its variants; one per group) are
the functions :func:`exclusion_filter` / :func:`exclusion_mask` and :func:`pick_one_per_group`, used
by :func:`find_similar` and by the offline evaluation alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from . import breaker, merchandising, registry
from .conf import get_settings
from .exceptions import IndexUnavailable
from .index.base import VECTOR_NAMES, FusedQuery, SearchFilter, pick_one_per_group
from .results import ResultStatus, SimilarHit, SimilarResult
from .specs import IndexSpec, PayloadType, UnknownFilter

logger = logging.getLogger(__name__)

__all__ = [
    "exclusion_filter", "exclusion_mask", "find_similar", "load_hits", "pick_one_per_group", "relative_filter",
    "spec_filter",
]

#: the payload a result needs: the object's key (to load it) and its group (one per group)
RESULT_FIELDS = ("pk", "group")


# ---------------------------------------------------------------------------------------------
# Filters: the spec's vocabulary turned into a store-neutral SearchFilter
# ---------------------------------------------------------------------------------------------
def spec_filter(spec: IndexSpec, options: dict[str, Any], payload: dict[str, Any] | None = None) -> SearchFilter:
    """``options`` (filter name → value, as callers pass them) as a :class:`SearchFilter`;
    ``payload`` is the query object's, for filters relative to it ("the same category")."""
    unknown = set(options) - set(spec.filters)
    if unknown:
        known = ", ".join(sorted(spec.filters)) or "none"
        raise UnknownFilter(f"{spec.label} has no filter {', '.join(sorted(unknown))} (its filters: {known})")
    match: dict[str, Any] = {}
    match_any: dict[str, list[Any]] = {}
    for name, value in options.items():
        declared = spec.filters[name]
        condition = declared.condition(name, value, payload)
        if condition is None:
            continue
        kind, wanted = condition
        (match if kind == "match" else match_any)[declared.field] = wanted
    return SearchFilter(match=match, match_any=match_any)


def relative_filter(spec: IndexSpec, options: dict[str, Any], payload: dict[str, Any] | None) -> bool:
    """Whether ``options`` keep the query object's own region of the space (:attr:`FusedQuery.near`):
    a ``relative_to`` filter that applies at the object's own, deepest level (``same_category=True``
    on an object with a category: its own category, not an ancestor), and no other filter on the
    same field (``category=N`` next to it searches category N). Other conditions may come with it
    only on yes/no fields (in stock, as measured); a keyword or number next to it (a rare brand
    in the own category) can leave a few points scattered over the region, which are sized as
    any filter (scored exactly when few)."""
    if payload is None:
        return False
    relative: set[str] = set()
    fields: dict[str, int] = {}
    for name, value in options.items():
        declared = spec.filters.get(name)
        if declared is None or declared.condition(name, value, payload) is None:
            continue
        fields[declared.field] = fields.get(declared.field, 0) + 1
        if declared.relative_to is not None:
            depth = len(payload.get(declared.relative_to) or [])
            if value is True or (not isinstance(value, bool) and int(value) >= depth):
                relative.add(declared.field)
                continue
        if declared.type != PayloadType.BOOL:
            return False
    return any(fields[field] == 1 for field in relative)


def exclusion_filter(
    base: SearchFilter, payload: dict[str, Any], point_id: str, *, exclude_variants: bool,
) -> SearchFilter:
    """``base`` plus what is never shown next to an object: itself, and (with
    ``exclude_variants``) the other members of its group."""
    exclude = dict(base.exclude)
    if exclude_variants and payload.get("group") is not None:
        exclude["group"] = payload["group"]
    return SearchFilter(
        match=base.match, match_any=base.match_any, exclude=exclude, ranges=base.ranges,
        exclude_ids=base.exclude_ids | {point_id}, ids=base.ids,
    )


def exclusion_mask(groups: np.ndarray, queries: np.ndarray, *, exclude_variants: bool = True) -> np.ndarray:
    """The rule of :func:`exclusion_filter` over a whole catalog: ``(len(queries), n)`` booleans,
    True where a candidate is never shown for that query (itself; its group's members)."""
    if exclude_variants:
        mask = groups[queries][:, None] == groups[None, :]
    else:
        mask = np.zeros((len(queries), len(groups)), dtype=bool)
    mask[np.arange(len(queries)), queries] = True
    return mask


# ---------------------------------------------------------------------------------------------
# find_similar
# ---------------------------------------------------------------------------------------------
def find_similar(
    obj: Any,
    *,
    limit: int = 10,
    exclude_variants: bool = True,
    one_per_group: bool = True,
    weights: dict[str, float] | None = None,
    modalities: Iterable[str] = VECTOR_NAMES,
    merchandise: bool = True,
    **filters: Any,
) -> SimilarResult:
    """Objects most like ``obj``: fused image+text cosine, with the exact per-modality scores.

    One request to the vector store finds, scores, fuses and groups the candidates
    (:meth:`VectorIndex.query_fused`); before it, the object's own vectors and payload are read
    by id.

    ``filters`` are the spec's named filters (the example shop: ``same_category=True|N``,
    ``in_stock=True``, ``brand="..."``); an undeclared name raises :class:`UnknownFilter`.
    Never raises for an unindexed object or a store that is down: the result's ``status``
    says so.
    """
    spec = registry.get_spec(type(obj))
    conf = get_settings()
    weights = dict(weights or registry.fusion_weights(spec))
    down = breaker.is_open(spec.label)
    if down is not None:
        return SimilarResult(ResultStatus.UNAVAILABLE, message=down)
    index = registry.vector_index(spec)
    point_id = spec.point_id(obj.pk)
    try:
        stored = index.retrieve([point_id], with_vectors=True).get(point_id)
        if stored is None:
            return SimilarResult(ResultStatus.NOT_INDEXED, message=f"{obj} is not indexed yet")
        query_vectors = {m: v for m, v in stored.vectors.items() if m in modalities and weights.get(m, 0) > 0}
        if not query_vectors:
            return SimilarResult(ResultStatus.NOT_INDEXED, message=f"{obj} has no vectors to compare")
        search_filter = exclusion_filter(
            spec_filter(spec, filters, stored.payload), stored.payload, point_id,
            exclude_variants=exclude_variants,
        )
        # staff's blocks never come back from the search; pinned objects load with the hits
        staff = merchandising.plan(obj, spec) if merchandise else merchandising.Plan()
        search_filter = replace(search_filter, exclude_ids=search_filter.exclude_ids | staff.blocked_point_ids)
        found = index.query_fused(FusedQuery(
            vectors=query_vectors, weights=weights, fetch=max(conf.candidates, limit * 4), limit=limit,
            filter=search_filter, group_by="group" if one_per_group else None, payload_fields=RESULT_FIELDS,
            near=relative_filter(spec, filters, stored.payload),  # its own category: the graph around it
        ))
    except IndexUnavailable as exc:
        logger.warning("find_similar(%s): index unavailable: %s", obj.pk, exc)
        breaker.trip(spec.label, str(exc))
        return SimilarResult(ResultStatus.UNAVAILABLE, message=str(exc))

    ranked = [(hit.score, hit.scores, hit.payload["pk"]) for hit in found]
    ranked += [(0.0, {}, key) for key in staff.pinned_keys]  # placed by merchandising.apply
    loaded = load_hits(spec, ranked, filters)
    if merchandise:  # staff's pins, blocks and rules (``merchandise=False``: the model's own list)
        loaded = merchandising.apply(obj, spec, loaded, limit=limit, filters=filters, more=lambda n: find_similar(
            obj, limit=n, exclude_variants=exclude_variants, one_per_group=one_per_group, weights=weights,
            modalities=modalities, merchandise=False, **filters).hits)
    return SimilarResult(ResultStatus.OK, loaded)


def load_hits(
    spec: IndexSpec, ranked: list[tuple[float, dict[str, float], Any]], filters: dict[str, Any] | None = None,
) -> list[SimilarHit]:
    """(score, scores, stored key) rows as hits with their objects, in order, in one query;
    keys whose object is gone, or no longer passes the filters in the database, are dropped."""
    pks = [spec.to_pk(key) for _s, _m, key in ranked]
    objects = spec.filter_queryset(spec.get_queryset(), filters or {}).in_bulk(pks)
    return [
        SimilarHit(objects[pk], pk, score, scores)
        for (score, scores, _key), pk in zip(ranked, pks, strict=True)
        if pk in objects
    ]
