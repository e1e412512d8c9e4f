"""The one-request fused query for Qdrant Edge (qdrant-edge-py's Query API).

The request, innermost first::

    nearest(image, fetch) ─┐                          ┌─ rescore: image cosine of every candidate ─┐
                           ├─ union (RRF, 2 × fetch) ─┤                                            ├─ formula
    nearest(text,  fetch) ─┘                          └─ rescore: text cosine of every candidate  ─┘

The union holds every candidate of either named vector; each rescoring stage scores all of them
exactly in its named vector, so a candidate found through one modality gets its exact score in
the other (as ``rank_candidates`` did with its extra id-restricted queries). The formula is the
fusion rule of :func:`similarity.fusion.fuse_scores` ("none"): the weighted mean of the cosines a
point has, a point without a named vector (no image) scored on the others, via
``HasVectorCondition``.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .base import (
    FusedHit,
    FusedQuery,
    SearchFilter,
    active_vectors,
    hit_scores,
    pick_one_per_group,
    rescored,
    vectors_to_fetch,
)

if TYPE_CHECKING:
    from .edge import QdrantEdgeIndex

#: the fused score of a point with none of the named vectors (outside the cosine range)
NO_SCORE = -2.0


def fused_request(request: FusedQuery, *, rows: int, search_filter: SearchFilter | None, params: Any,
                  to_filter: Any) -> Any:
    from qdrant_edge import (
        Expression,
        Formula,
        Fusion,
        HasVectorCondition,
        PayloadSelector,
        Prefetch,
        Query,
        QueryRequest,
    )

    active = active_vectors(request)
    edge_filter = to_filter(search_filter) if search_filter else None
    nearest = [
        Prefetch(limit=request.fetch, query=Query.Nearest(vector, using=name), filter=edge_filter, params=params)
        for name, vector, _w in active
    ]
    union = Prefetch(limit=request.fetch * len(active), query=Fusion.Rrf(k=60),  # type: ignore[arg-type]
                     prefetches=nearest)  # the stub lists Fusion, the binding takes its Rrf
    rescored = [
        Prefetch(limit=request.fetch * len(active), query=Query.Nearest(vector, using=name), prefetches=[union])
        for name, vector, _w in active
    ]
    numerator, denominator = [], []
    for n, (name, _vector, weight) in enumerate(active):
        has = Expression.Condition(HasVectorCondition(name))
        numerator.append(Expression.Mult([Expression.Constant(weight), Expression.Variable(f"$score[{n}]"), has]))
        denominator.append(Expression.Mult([Expression.Constant(weight), has]))
    formula = Formula(
        Expression.Div(Expression.Sum(numerator), Expression.Sum(denominator), by_zero_default=NO_SCORE),
        defaults={f"$score[{n}]": 0.0 for n in range(len(active))},
    )
    payload = PayloadSelector.Include(list(request.payload_fields)) if request.payload_fields is not None else True
    return QueryRequest(
        limit=rows, prefetches=rescored, query=formula, with_payload=payload,
        with_vector=vectors_to_fetch(request) or False,
    )


def query_fused(index: QdrantEdgeIndex, request: FusedQuery) -> list[FusedHit]:
    """Run :func:`fused_request` on ``index``. With ``group_by`` the best of each group is kept
    here from ``4 × limit`` fused rows (qdrant-edge has no grouping API); when variants fill those
    rows and leave fewer than ``limit`` groups, the request runs again without the groups already
    taken (rare: a catalog of many-variant products)."""
    from qdrant_edge import QuantizationSearchParams, SearchParams

    if not any(w > 0 for w in request.weights.values()):
        return []
    rescore = QuantizationSearchParams(rescore=True) if index.tuning.quantization else None
    params = SearchParams(hnsw_ef=index.tuning.hnsw_ef, quantization=rescore)
    group = request.group_by
    rows = request.limit * 4 if group else request.limit
    picked: list[tuple[FusedHit, Any]] = []
    search_filter = request.filter
    for _attempt in range(4):
        points = index.run_query(
            fused_request(request, rows=rows, search_filter=search_filter, params=params, to_filter=to_edge_filter)
        )
        # (hit, its vectors): the exact per-modality scores are computed for the hits kept only
        rows_found = [
            (FusedHit(str(p.id), float(p.score), {}, index.stored_payload(p.payload)), p.vector)
            for p in points
            if p.score > NO_SCORE
        ]
        if not group:
            picked = rows_found
            break
        def group_of(row: tuple[FusedHit, Any], key: str = group) -> Any:
            return row[0].payload.get(key)

        picked += pick_one_per_group(rows_found, group_of, request.limit - len(picked))
        if len(picked) >= request.limit or len(points) < rows:
            break
        narrowed = (search_filter or SearchFilter()).without_groups(
            group, [hit.payload[group] for hit, _v in picked if hit.payload.get(group) is not None]
        )  # and the rows already taken (a row without a group is not left out by its group)
        search_filter = replace(narrowed, exclude_ids=narrowed.exclude_ids | {hit.id for hit, _v in picked})
    return rescored(request, [replace(hit, scores=hit_scores(request, hit.score, vectors, hit.payload))
                              for hit, vectors in picked])


def to_edge_filter(spec: SearchFilter) -> Any:
    from qdrant_edge import (
        FieldCondition,
        Filter,
        HasIdCondition,
        MatchAny,
        MatchValue,
        RangeFloat,
    )

    def value(v: Any) -> Any:
        return int(v) if isinstance(v, bool) else v

    must: list[Any] = [FieldCondition(k, match=MatchValue(value(v))) for k, v in spec.match.items()]
    must += [FieldCondition(k, match=MatchAny(list(v))) for k, v in spec.match_any.items()]
    must += [
        FieldCondition(k, range=RangeFloat(gte=lo, lte=hi)) for k, (lo, hi) in spec.ranges.items()
    ]
    if spec.ids is not None:
        must.append(HasIdCondition({uuid.UUID(i) for i in spec.ids}))
    must_not: list[Any] = [FieldCondition(k, match=MatchValue(value(v))) for k, v in spec.exclude.items()]
    must_not += [FieldCondition(k, match=MatchAny([value(x) for x in v])) for k, v in spec.exclude_any.items()]
    if spec.exclude_ids:
        must_not.append(HasIdCondition({uuid.UUID(i) for i in spec.exclude_ids}))
    return Filter(must=must or None, must_not=must_not or None)
