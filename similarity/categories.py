"""Category suggestions: a similarity-weighted vote of an object's nearest neighbours.

The neighbours are those :func:`~similarity.query.find_similar` returns (fused image + text
cosine, variants excluded, no merchandising), their categories the spec's ``get_taxonomy``. Each
neighbour votes for its category path with its fused score sharpened (:data:`SHARPEN`); a level's
suggestion is the path prefix with the most weight under the level above it (top-down, so the path
stays a real branch of the tree). The confidence of a level is its winner's share of the weight cast at that
level. The suggested path stops at the deepest level whose share is still a majority
(:data:`MIN_SHARE`); ``apply_suggestion`` writes it through ``spec.apply_category``.

The same :func:`vote` serves the offline evaluation (``similarity_evaluate --task categories``),
so what is measured is what staff see.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import registry
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
) -> CategorySuggestion | None:
    """The suggestion from ``(category path, similarity)`` pairs (paths root first; empty ones
    and non-positive similarities do not vote; each votes with ``similarity ** sharpen``).
    ``None`` when nobody votes."""
    votes = [(tuple(path), float(sim) ** sharpen) for path, sim in neighbours if path and sim > 0]
    if not votes:
        return None
    levels: list[list[tuple[tuple[str, ...], float]]] = []
    chosen: tuple[str, ...] = ()
    depth = max(len(p) for p, _ in votes)
    for level in range(1, depth + 1):
        # every prefix at this level: the ranking (for accuracy@3), the winner under ``chosen``
        weights: dict[tuple[str, ...], float] = {}
        for voted, sim in votes:
            if len(voted) >= level:
                weights[voted[:level]] = weights.get(voted[:level], 0.0) + sim
        total = sum(weights.values())
        ranked = sorted(((p, w / total) for p, w in weights.items()), key=lambda row: (-row[1], row[0]))
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


def suggest_category(obj: Any, *, neighbours: int = NEIGHBOURS) -> CategorySuggestion | None:
    """The suggestion for ``obj`` from its indexed neighbours (``None``: not indexed, or no
    neighbour has a category)."""
    spec = registry.get_spec(type(obj))
    result = find_similar(obj, limit=neighbours, merchandise=False)
    if not result.ok:
        logger.info("no category suggestion for %s %s: %s", spec.label, obj.pk, result.message)
        return None
    return vote((spec.get_taxonomy(hit.object), hit.score) for hit in result)


def suggest_categories(model: Any = None, *, only_missing: bool = False,
                       neighbours: int = NEIGHBOURS) -> Iterable[tuple[Any, CategorySuggestion | None]]:
    """``(object, suggestion)`` for every object of the spec (those without a category only,
    with ``only_missing``), in keyset pages."""
    from .backlog import iter_batches

    spec = registry.get_spec(model)
    queryset = spec.get_queryset()
    for batch in iter_batches(queryset, 256):
        for obj in queryset.filter(pk__in=batch).order_by("pk"):
            if only_missing and spec.get_taxonomy(obj):
                continue
            yield obj, suggest_category(obj, neighbours=neighbours)


def apply_suggestion(obj: Any, suggestion: CategorySuggestion) -> None:
    """Write the suggested path through the spec (``spec.apply_category``)."""
    registry.get_spec(type(obj)).apply_category(obj, list(suggestion.path))
