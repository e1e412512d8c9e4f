"""Label-free fusion weights: how much each modality's neighbours are confirmed by the other.

For modality m, take each product's k nearest neighbours by m; score them by the *other*
modality's cosine, relative to what a random product scores (chance) and to what the other
modality's own neighbours score (its ceiling)::

    agreement_m = mean(cos_o(i, N_m(i)) − chance_o) / mean(cos_o(i, N_o(i)) − chance_o)

A modality whose neighbours are noise (blank photos, boiler-plate titles) gets agreement near 0;
one whose neighbours the other modality also finds close gets near 1. The weights are the
agreements, normalised to sum to 1. No labels, no tuning to a catalog: only ``k`` (10, the page
size) and the sample size.
"""

from __future__ import annotations

import numpy as np

#: neighbours per product (the size of a "similar products" row)
K = 10
#: products sampled as queries on large catalogs (the estimate is a mean: 2,000 is plenty)
SAMPLE = 2000


def modality_weights(
    vectors: dict[str, np.ndarray], *, k: int = K, sample: int = SAMPLE, seed: int = 0,
) -> dict[str, float]:
    """``vectors[m]`` (n, dim), zero rows where an object lacks m. Weights summing to 1."""
    names = [m for m in ("image", "text") if m in vectors]
    if len(names) < 2:
        return {m: 1.0 for m in names}
    present = {m: np.linalg.norm(vectors[m], axis=1) > 0 for m in names}
    both = np.flatnonzero(present[names[0]] & present[names[1]])
    if len(both) <= k + 1:
        return {m: 1.0 / len(names) for m in names}
    rng = np.random.default_rng(seed)
    queries = rng.choice(both, size=min(sample, len(both)), replace=False)
    agreement = {}
    for m in names:
        other = names[1] if m == names[0] else names[0]
        agreement[m] = _agreement(vectors[m][both], vectors[other][both], np.searchsorted(both, queries), k)
    total = sum(agreement.values())
    if total <= 0:
        return {m: 1.0 / len(names) for m in names}
    return {m: round(agreement[m] / total, 4) for m in names}


def _agreement(own: np.ndarray, other: np.ndarray, queries: np.ndarray, k: int) -> float:
    own_sim = own[queries] @ own.T
    other_sim = other[queries] @ other.T
    rows = np.arange(len(queries))
    own_sim[rows, queries] = -np.inf
    other_sim[rows, queries] = -np.inf
    by_own = np.argpartition(-own_sim, k, axis=1)[:, :k]
    by_other = np.argpartition(-other_sim, k, axis=1)[:, :k]
    finite = np.where(np.isfinite(other_sim), other_sim, np.nan)
    chance = float(np.nanmean(finite))
    got = float(np.take_along_axis(other_sim, by_own, axis=1).mean()) - chance
    ceiling = float(np.take_along_axis(other_sim, by_other, axis=1).mean()) - chance
    return max(0.0, got / ceiling) if ceiling > 0 else 0.0
