""""Why these are shown": per-modality contributions to the fused score, and what the spec says
two objects share (``spec.shared_attributes``: brand, category, price band in the example shop).

Contributions follow the one fusion rule (:func:`similarity.fusion.fuse_scores`, no
normalisation): the fused score is ``sum(w_m * s_m) / sum(w_m)`` over the modalities a hit has,
so modality ``m`` contributes ``w_m * s_m / sum(w_m)``. The words ("similar look") compare a hit
with the rest of its list, since raw cosines of different encoders sit in different bands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import registry
from .results import SimilarHit

#: what a modality standing out in a list is called in the tooltip
MODALITY_WORDS = {"image": "similar look", "text": "similar description"}


@dataclass
class Explanation:
    contributions: dict[str, float] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)
    #: short phrases, for the tooltip ("Same brand · similar look")
    phrases: list[str] = field(default_factory=list)
    pinned: bool = False

    @property
    def summary(self) -> str:
        return " · ".join(self.phrases)


def contributions(scores: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.get(m, 0.0) for m in scores if weights.get(m, 0.0) > 0)
    if total <= 0:
        return {}
    return {m: weights.get(m, 0.0) * s / total for m, s in scores.items() if weights.get(m, 0.0) > 0}


def explain_hits(obj: Any, hits: list[SimilarHit], *, weights: dict[str, float] | None = None) -> list[Explanation]:
    """One explanation per hit of ``obj``'s list, in order."""
    spec = registry.get_spec(type(obj))
    weights = dict(weights or registry.fusion_weights(spec))  # the weights find_similar fused with
    means: dict[str, float] = {}
    for modality in MODALITY_WORDS:
        values = [h.scores[modality] for h in hits if modality in h.scores]
        if values:
            means[modality] = sum(values) / len(values)
    out = []
    for hit in hits:
        shared = spec.shared_attributes(obj, hit.object)
        standout = [MODALITY_WORDS[m] for m in MODALITY_WORDS if m in hit.scores and m in means
                    and hit.scores[m] >= means[m]]
        pinned = not hit.scores  # merchandising: a pinned object carries no model scores
        phrases = [*shared, *standout]
        if pinned:
            phrases.insert(0, "Picked by our staff")
        if phrases:
            phrases[0] = phrases[0][:1].upper() + phrases[0][1:]
        out.append(Explanation(contributions(hit.scores, weights), shared, phrases, pinned))
    return out
