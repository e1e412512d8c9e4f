"""The one-request fused query for a Qdrant server (``query_points`` / ``query_points_groups``).

The same requests as :mod:`.edge_fused`: on a collection with the :data:`~.base.FUSED` vector,
one search of it among complete points and one per missing part among points lacking it, with a formula
dividing by the weights of the parts each point has; otherwise (an older collection, one
modality) nearest points per named vector, their union, an exact rescoring of the union in each
named vector, and a formula for the weighted mean of the cosines each point has. With
``group_by`` the server's grouping keeps the best point of each group.
"""

from __future__ import annotations

from typing import Any

from .base import FUSED, FUSED_PARTS, PARTIAL, FusedQuery, SearchFilter, active_vectors, part_shares

#: the fused score of a point with none of the named vectors (outside the cosine range)
NO_SCORE = -2.0


def fused_arguments(request: FusedQuery, *, search_filter: SearchFilter | None, params: Any,
                    to_filter: Any) -> dict[str, Any]:
    """Keyword arguments for ``query_points``/``query_points_groups`` (without collection/limit)."""
    from qdrant_client import models

    active = active_vectors(request)
    client_filter = to_filter(search_filter) if search_filter else None
    nearest = [
        models.Prefetch(query=vector, using=name, limit=request.fetch, filter=client_filter, params=params)
        for name, vector, _w in active
    ]
    union = models.Prefetch(prefetch=nearest, query=models.FusionQuery(fusion=models.Fusion.RRF),
                            limit=request.fetch * len(active))
    rescored = [
        models.Prefetch(prefetch=[union], query=vector, using=name, limit=request.fetch * len(active))
        for name, vector, _w in active
    ]
    numerator: list[Any] = []
    denominator: list[Any] = []
    for n, (name, _vector, weight) in enumerate(active):
        has = models.HasVectorCondition(has_vector=name)
        numerator.append(models.MultExpression(mult=[weight, f"$score[{n}]", has]))
        denominator.append(models.MultExpression(mult=[weight, has]))
    formula = models.FormulaQuery(
        formula=models.DivExpression(div=models.DivParams(
            left=models.SumExpression(sum=numerator), right=models.SumExpression(sum=denominator),
            by_zero_default=NO_SCORE,
        )),
        defaults={f"$score[{n}]": 0.0 for n in range(len(active))},
    )
    return {"prefetch": rescored, "query": formula, **_returned(request)}


def fused_vector_arguments(request: FusedQuery, query: list[float], *, search_filter: SearchFilter | None,
                           params: Any, to_filter: Any) -> dict[str, Any]:
    """The same keyword arguments for a collection with the :data:`~.base.FUSED` vector."""
    from qdrant_client import models

    spec = search_filter or SearchFilter()
    has = [models.HasVectorCondition(has_vector=name) for name in FUSED_PARTS]
    lacking = [models.FieldCondition(key=PARTIAL, match=models.MatchValue(value=n))
               for n in range(1, len(FUSED_PARTS) + 1)]
    parts = [to_filter(spec, must_not=lacking), *(to_filter(spec, must=[flag]) for flag in lacking)]
    searches = [models.Prefetch(query=query, using=FUSED, limit=request.fetch, filter=part, params=params)
                for part in parts]
    shares = part_shares(request)
    scores = [f"$score[{n}]" for n in range(len(searches))]
    formula = models.FormulaQuery(  # the searches are disjoint: a point has one score, the others 0
        formula=models.DivExpression(div=models.DivParams(
            left=models.SumExpression(sum=list(scores)),
            right=models.SumExpression(sum=[models.MultExpression(mult=[shares[name], h])
                                            for name, h in zip(FUSED_PARTS, has, strict=True)]),
            by_zero_default=NO_SCORE,
        )),
        defaults=dict.fromkeys(scores, 0.0),
    )
    return {"prefetch": searches, "query": formula, **_returned(request)}


def _returned(request: FusedQuery) -> dict[str, Any]:
    """The payload fields and the vectors (for the exact per-modality cosines) each hit brings."""
    payload: Any = list(request.payload_fields) if request.payload_fields is not None else True
    return {"with_payload": payload, "with_vectors": [name for name, _v, _w in active_vectors(request)]}
