"""The one-request fused query for a Qdrant server (``query_points`` / ``query_points_groups``).

The same stages as :mod:`.edge_fused`: nearest points per named vector, their union, an exact
rescoring of the union in each named vector, and a formula for the weighted mean of the cosines
each point has. With ``group_by`` the server's grouping keeps the best point of each group.
"""

from __future__ import annotations

from typing import Any

from .base import FusedQuery, SearchFilter, active_vectors, vectors_to_fetch

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
    payload: Any = list(request.payload_fields) if request.payload_fields is not None else True
    return {
        "prefetch": rescored, "query": formula, "with_payload": payload,
        "with_vectors": vectors_to_fetch(request) or False,
    }
