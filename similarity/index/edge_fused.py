"""The one-request fused query for Qdrant Edge (qdrant-edge-py's Query API).

A collection with the :data:`~.base.FUSED` vector (every collection created since it exists)
answers a request that fuses image and text with one search of that vector, in two disjoint
parts::

    nearest(fused, rows)  among points with every part  ─┐
    nearest(fused, rows)  among points without image    ─┼─ formula: dot / Σ weights of the parts a point has
    nearest(fused, rows)  among points without text     ─┘   (which: the indexed PARTIAL flag)

The dot product of a point's fused vector with the weighted query is ``Σ w·cos`` over the parts
it has, so the first search ranks complete points by their exact fused score; the others rank
the points lacking one part among themselves, which the dot product alone would under-score
(each on its own scale, hence one search per missing part); the formula divides by the weights
of the parts each point has (the rule of :func:`similarity.fusion.fuse_scores`). The searches are
disjoint, so a point has one score and the others default to 0. With int8 quantisation every
search rescores with the original vectors.

Older collections (created before the fused vector, until their next rebuild) and one-modality
requests run the request of per-modality searches, innermost first::

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
    FUSED,
    FUSED_PARTS,
    PARTIAL,
    FusedHit,
    FusedQuery,
    SearchFilter,
    active_vectors,
    fused_query_vector,
    part_shares,
    pick_one_per_group,
    rescored,
    with_margin,
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
    return QueryRequest(limit=rows, prefetches=rescored, query=formula, with_payload=_payload(request),
                        with_vector=False)


def fused_vector_request(request: FusedQuery, query: list[float], *, rows: int,
                         search_filter: SearchFilter | None, params: Any, per_part: int | None = None) -> Any:
    """The request on the :data:`~.base.FUSED` vector (see the module docstring).

    The parts are disjoint and each search ranks its points by their exact fused score (up to
    the formula's division, the same for every point of one part), so each part's best ``rows``
    hold every point of the best ``rows`` overall. ``per_part`` (default ``request.fetch``) is
    what each search asks for: :func:`query_fused` asks for ``rows`` when the graph walks the
    same candidates either way (``fetch`` at most ``hnsw_ef``: the engine walks ``max(limit,
    ef)``), so the results are the same and the engine scores and sorts fewer rows.
    """
    from qdrant_edge import (
        Expression,
        FieldCondition,
        Formula,
        HasVectorCondition,
        MatchValue,
        Prefetch,
        Query,
        QueryRequest,
    )

    spec = search_filter or SearchFilter()
    lacking = [FieldCondition(PARTIAL, match=MatchValue(n)) for n in range(1, len(FUSED_PARTS) + 1)]
    parts = [to_edge_filter(spec, must_not=lacking), *(to_edge_filter(spec, must=[flag]) for flag in lacking)]
    per_part = max(per_part or request.fetch, rows)
    searches = [Prefetch(limit=per_part, query=Query.Nearest(query, using=FUSED), filter=part, params=params)
                for part in parts]
    shares = part_shares(request)
    weight_had = Expression.Sum([
        Expression.Mult([Expression.Constant(shares[name]), Expression.Condition(HasVectorCondition(name))])
        for name in FUSED_PARTS
    ])
    scores = [f"$score[{n}]" for n in range(len(searches))]
    formula = Formula(  # the searches are disjoint: a point has one score, the others are 0
        Expression.Div(Expression.Sum([Expression.Variable(v) for v in scores]), weight_had, by_zero_default=NO_SCORE),
        defaults=dict.fromkeys(scores, 0.0),
    )
    return QueryRequest(limit=rows, prefetches=searches, query=formula, with_payload=_payload(request),
                        with_vector=False)


def _payload(request: FusedQuery) -> Any:
    from qdrant_edge import PayloadSelector

    return PayloadSelector.Include(list(request.payload_fields)) if request.payload_fields is not None else True


def query_fused(index: QdrantEdgeIndex, request: FusedQuery) -> list[FusedHit]:
    """Run :func:`fused_vector_request` (or, on an older collection or for one modality,
    :func:`fused_request`) on ``index``, then read the kept hits' vectors back by id for their
    exact per-modality cosines. On the fused vector a few rows more than ``limit`` are asked for
    and cut after that rescoring (:func:`~.base.with_margin`: its rounding). With ``group_by`` the best
    of each group is kept here from ``4 ×`` as many fused rows (qdrant-edge has no grouping API);
    when variants fill those rows and leave fewer groups, the request runs again without the
    groups already taken (rare: a catalog of many-variant products)."""
    if not any(w > 0 for w in request.weights.values()):
        return []
    group = request.group_by
    query = fused_query_vector(request) if index.has_vector(FUSED) else None
    # the margin undoes the stored fused vector's rounding; the per-modality request ranks float32
    wanted = with_margin(request.limit) if query is not None else request.limit
    rows = wanted * 4 if group else wanted
    params = index.params_for(request.filter, [FUSED] if query is not None else
                              [name for name, _v, _w in active_vectors(request)], near=request.near)
    picked: list[FusedHit] = []
    search_filter = request.filter
    for _attempt in range(4):
        points = index.run_query(
            fused_vector_request(request, query, rows=rows, search_filter=search_filter, params=params,
                                 per_part=_per_part(index, request, rows, params))
            if query is not None else
            fused_request(request, rows=rows, search_filter=search_filter, params=params, to_filter=to_edge_filter)
        )
        found = [FusedHit(str(p.id), float(p.score), {}, index.stored_payload(p.payload))
                 for p in points if p.score > NO_SCORE]
        if not group:
            picked = found
            break
        def group_of(hit: FusedHit, key: str = group) -> Any:
            return hit.payload.get(key)

        picked += pick_one_per_group(found, group_of, wanted - len(picked))
        if len(picked) >= wanted or len(points) < rows:
            break
        narrowed = (search_filter or SearchFilter()).without_groups(
            group, [hit.payload[group] for hit in picked if hit.payload.get(group) is not None]
        )  # and the rows already taken (a row without a group is not left out by its group)
        search_filter = replace(narrowed, exclude_ids=narrowed.exclude_ids | {hit.id for hit in picked})
    scores = modality_scores(index, request, [hit.id for hit in picked])
    return rescored(request, [replace(hit, scores=scores.get(hit.id, {})) for hit in picked])[:request.limit]


def _per_part(index: QdrantEdgeIndex, request: FusedQuery, rows: int, params: Any) -> int:
    """What each search of the fused request asks for: ``rows`` when that walks the same graph
    candidates as ``request.fetch`` would (``fetch`` at most the ``hnsw_ef`` of the search's
    ``params``, whichever list :meth:`~.edge.QdrantEdgeIndex.params_for` chose; an exact search
    scores every point anyway), else ``fetch``; with int8 quantisation always ``fetch``, the
    oversampling the rescoring with the originals needs. At 100k points: the same results for
    400 of 400 queries, p50 4.55 against 4.71 ms (docs/benchmarks.md)."""
    if index.tuning.quantization:
        return request.fetch
    return rows if params.exact or request.fetch <= params.hnsw_ef else request.fetch


def modality_scores(index: QdrantEdgeIndex, request: FusedQuery, ids: list[str]) -> dict[str, dict[str, float]]:
    """The exact cosine of each of ``ids`` in each active named vector, scored by the engine: one
    batch of id-restricted exact searches (no vectors cross into Python), originals even when
    quantised. A point without a named vector has no score for it."""
    from qdrant_edge import (
        Filter,
        HasIdCondition,
        QuantizationSearchParams,
        Query,
        QueryBatchRequest,
        QueryRequest,
        SearchParams,
    )

    if not ids:
        return {}
    only = Filter(must=[HasIdCondition({uuid.UUID(i) for i in ids})])
    exact = SearchParams(exact=True, quantization=QuantizationSearchParams(ignore=True))
    active = active_vectors(request)
    batches = index.run_query_batch(QueryBatchRequest([
        QueryRequest(limit=len(ids), query=Query.Nearest(vector, using=name), filter=only, params=exact,
                     with_payload=False, with_vector=False)
        for name, vector, _w in active
    ]))
    scores: dict[str, dict[str, float]] = {}
    for (name, _vector, _w), points in zip(active, batches, strict=True):
        for p in points:
            scores.setdefault(str(p.id), {})[name] = float(p.score)
    return scores


def to_edge_filter(spec: SearchFilter, *, must: list[Any] | None = None, should: list[Any] | None = None,
                   must_not: list[Any] | None = None) -> Any:
    """``spec`` as a qdrant-edge ``Filter``, with extra ``must``/``should``/``must_not`` conditions."""
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

    must = [*(must or []), *(FieldCondition(k, match=MatchValue(value(v))) for k, v in spec.match.items())]
    must += [FieldCondition(k, match=MatchAny(list(v))) for k, v in spec.match_any.items()]
    must += [
        FieldCondition(k, range=RangeFloat(gte=lo, lte=hi)) for k, (lo, hi) in spec.ranges.items()
    ]
    if spec.ids is not None:
        must.append(HasIdCondition({uuid.UUID(i) for i in spec.ids}))
    must_not = [*(must_not or []), *(FieldCondition(k, match=MatchValue(value(v))) for k, v in spec.exclude.items())]
    must_not += [FieldCondition(k, match=MatchAny([value(x) for x in v])) for k, v in spec.exclude_any.items()]
    if spec.exclude_ids:
        must_not.append(HasIdCondition({uuid.UUID(i) for i in spec.exclude_ids}))
    return Filter(must=must or None, should=should or None, must_not=must_not or None)
