"""The one fusion rule: per-modality cosines to one score (find_similar and evaluation)."""

from __future__ import annotations

import warnings

import numpy as np

#: how per-modality cosines are made comparable before weighting. "none" measured best on
#: flipkart-1050 (p@10 0.783 vs 0.780 for "zscore", also with 30% of images missing); see
#: docs/evaluation.md. "zscore" is kept for encoders whose cosine ranges differ a lot.
FUSION_NORMALISATION = "none"


def fuse_scores(
    cosines: dict[str, np.ndarray], weights: dict[str, float], *, normalisation: str | None = None,
) -> np.ndarray:
    """The one fusion rule, vectorised: ``cosines[m]`` has shape (..., candidates), NaN where a
    candidate lacks modality m. Returns the fused scores (-inf where no modality scored).

    ``zscore``: each modality's cosines are standardised over the candidate set of that query
    (last axis) before the weighted mean, so a weight means the same share of influence whatever
    the spread of a model's cosines (EfficientNet's sit in a narrow high band, MiniLM's spread
    wide). ``none``: the weighted mean of raw cosines. Either way a candidate lacking a modality
    is scored on the modalities it has.
    """
    how = normalisation or FUSION_NORMALISATION
    total = weighted = None
    for m, raw in cosines.items():
        w = float(weights.get(m, 0.0))
        if w <= 0:
            continue
        values = np.asarray(raw, dtype=np.float64)
        if how == "zscore":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no such modality
                mean = np.nanmean(values, axis=-1, keepdims=True)
                std = np.nanstd(values, axis=-1, keepdims=True)
            values = (values - mean) / np.where(std > 1e-9, std, 1.0)
        elif how != "none":
            raise ValueError(f"unknown fusion normalisation {how!r}")
        present = ~np.isnan(values)
        part = np.where(present, w * values, 0.0)
        weight = np.where(present, w, 0.0)
        weighted = part if weighted is None else weighted + part
        total = weight if total is None else total + weight
    if weighted is None or total is None:
        shape = next(iter(cosines.values())).shape if cosines else (0,)
        return np.full(shape, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weighted / np.where(total > 0, total, 1.0), -np.inf)


def weights_for(spec: object = None) -> dict[str, float]:
    """The fusion weights ``find_similar`` and the evaluation use, chosen without labels.

    ``SIMILARITY["WEIGHTS"]`` set explicitly in the settings wins. Otherwise, with a trained
    adapter live, its label-free weights (each modality's neighbours as confirmed by the other,
    :mod:`similarity.training.reliability`, measured on the catalog when it was trained); with
    none, equal weights. ``spec`` is accepted for per-spec rules; the encoders (and so the
    adapter) are shared by all specs today.
    """
    from django.conf import settings as django_settings

    from .conf import get_settings
    from .training.adapt import active_fusion_weights

    if "WEIGHTS" in (getattr(django_settings, "SIMILARITY", None) or {}):
        return dict(get_settings().weights)
    learned = active_fusion_weights()
    if learned:
        return dict(learned)
    return {"image": 0.5, "text": 0.5}
