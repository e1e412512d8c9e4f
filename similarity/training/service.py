"""Train, activate and roll back adapters (``manage.py similarity_train``; via ``services``).

Activation re-encodes every indexed spec through a normal rebuild generation
(:func:`similarity.rebuild.rebuild_index`) with the candidate adapter pinned for the rebuild;
the live generation keeps answering with the old vectors meanwhile, and the adapter becomes the
active one in the transaction that switches generations. A rollback does the same with the
previous artifact (or the plain encoders).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from django.utils import timezone

from .. import registry
from ..exceptions import SimilarityError
from ..rebuild import rebuild_index
from . import adapt
from .features import CatalogFeatures, catalog_features, text_views
from .heads import Heads, TrainConfig, train_heads
from .models import AdapterArtifact
from .reliability import modality_weights
from .text_head import TextTrainConfig, train_text_head

logger = logging.getLogger(__name__)


#: image–text pairs a joint head needs
MIN_PAIRS = 8


class TrainingError(SimilarityError):
    """Training or activation cannot run as asked."""


def train(
    model: Any = None, *, config: TrainConfig | None = None, labels: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> AdapterArtifact:
    """Train heads on the catalog's own image–text pairs and store them (not active yet).

    ``labels`` (object key → label) enable the optional supervised term; keys missing from it
    (a held-back split) only contribute their image–text pair.
    """
    spec = registry.get_spec(model)
    config = config or TrainConfig()
    started = time.perf_counter()
    features = catalog_features(spec, progress=progress)
    feature_seconds = time.perf_counter() - started
    pairs = features.paired()
    if len(pairs) < MIN_PAIRS:
        raise TrainingError(
            f"{spec.label}: {len(pairs)} objects have both an image and a text; training needs at least {MIN_PAIRS}. "
            "Without usable images, train a text head from the texts alone: similarity_train --text."
        )
    label_array = None
    if labels is not None and config.supervised > 0:
        label_array = np.array([labels.get(features.keys[i], f"__own_{i}") for i in pairs])
    heads = train_heads(features.vectors["image"][pairs], features.vectors["text"][pairs], config,
                        labels=label_array)
    weights = modality_weights(adapted(features, heads))
    meta = {
        "kind": "joint", "config": asdict(config), "pairs": int(len(pairs)), "objects": len(features),
        "feature_seconds": round(feature_seconds, 2), "train_seconds": heads.meta.get("seconds"),
        "loss": heads.meta.get("loss"), "fusion_weights": weights, "supervised": label_array is not None,
    }
    return _store(spec, features, heads, meta)


def train_text(
    model: Any = None, *, config: TextTrainConfig | None = None, progress: Callable[[int], None] | None = None,
) -> AdapterArtifact:
    """Train a text head on the catalog's own texts alone (no images, no labels) and store it
    (not active yet); photos, if any, keep the plain image encoder. See :mod:`.text_head`."""
    spec = registry.get_spec(model)
    config = config or TextTrainConfig()
    started = time.perf_counter()
    features = catalog_features(spec, progress=progress)
    views = text_views(features, spec)
    feature_seconds = time.perf_counter() - started
    objects = len(np.unique(views.owner))
    if objects < 8:
        raise TrainingError(f"{spec.label}: {objects} objects have a text; training a text head needs at least 8.")
    heads = train_text_head(views.vectors, views.owner, config)
    meta = {
        "kind": "text", "config": asdict(config), "objects": objects, "views": len(views),
        "feature_seconds": round(feature_seconds, 2), "train_seconds": heads.meta.get("seconds"),
        "loss": heads.meta.get("loss"), "drift": heads.meta.get("drift"),
        "fusion_weights": modality_weights(adapted(features, heads)),
    }
    return _store(spec, features, heads, meta)


def _store(spec: Any, features: CatalogFeatures, heads: Heads, meta: dict[str, Any]) -> AdapterArtifact:
    data = heads.to_bytes()
    version = "ad-" + hashlib.sha256(data).hexdigest()[:10]
    artifact, _created = AdapterArtifact.objects.update_or_create(
        version=version,
        defaults={"model_label": spec.label, "base_versions": features.versions, "meta": meta, "weights": data},
    )
    logger.info("trained adapter %s for %s: %s", version, spec.label, meta)
    return artifact


def adapted(features: CatalogFeatures, heads: Heads) -> dict[str, np.ndarray]:
    """The catalog's vectors through the heads (rows without the modality stay zero; a modality
    without a head keeps its base vectors)."""
    out = {}
    for m in ("image", "text"):
        if m not in heads.weights:
            out[m] = features.vectors[m]
            continue
        matrix = np.zeros((len(features), heads.out_dim(m)), dtype=np.float32)
        have = features.present[m]
        if have.any():
            matrix[have] = heads.apply(m, features.vectors[m][have])
        out[m] = matrix
    return out


def active_artifact() -> AdapterArtifact | None:
    return AdapterArtifact.objects.filter(active=True).first()


def activate(artifact: AdapterArtifact | None, *, progress: Callable[[int], None] | None = None,
             previous: AdapterArtifact | None | bool = True) -> None:
    """Re-encode every spec with ``artifact`` (None: the plain encoders) and make it live.

    ``previous=True`` records the artifact live now as the one to roll back to.
    """
    if artifact is not None:
        base = {"text": registry.base_text_encoder().version, "image": registry.base_image_encoder().version}
        if artifact.base_versions != base:
            raise TrainingError(
                f"adapter {artifact.version} was trained on {artifact.base_versions}, the encoders are now "
                f"{base}; train again."
            )
    current = active_artifact()
    before = current if previous is True else (previous or None)
    specs = list(registry.specs().values())

    def switch() -> None:
        AdapterArtifact.objects.filter(active=True).update(active=False)
        if artifact is not None:
            AdapterArtifact.objects.filter(pk=artifact.pk).update(
                active=True, activated_at=timezone.now(), previous=before
            )

    version = artifact.version if artifact is not None else None
    with adapt.using(version):
        for n, spec in enumerate(specs):
            last = n == len(specs) - 1
            rebuild_index(model=spec, resume=False, progress=progress,
                          before_switch=switch if last else None)
    adapt.forget()
    if artifact is not None:
        artifact.refresh_from_db()


def rollback(*, progress: Callable[[int], None] | None = None) -> AdapterArtifact | None:
    """Make the artifact that was live before the current one live again (None: the plain
    encoders); returns it."""
    current = active_artifact()
    if current is None:
        raise TrainingError("no adapter is active: nothing to roll back.")
    target = current.previous
    activate(target, progress=progress, previous=target.previous if target is not None else None)
    return target


def train_adapter(
    model: Any = None, *, epochs: int | None = None, seed: int = 0, text: bool = False,
) -> AdapterArtifact:
    """The command's training entry: the default configuration, with the given overrides;
    ``text``: a text head from the catalog's texts alone (:func:`train_text`); opt-in, never
    chosen automatically (it trades typed-search precision at rank 1 for similar products,
    docs/training.md)."""
    if text:
        text_config = TextTrainConfig(seed=seed)
        if epochs:
            text_config.epochs = epochs
        return train_text(model, config=text_config)
    config = TrainConfig(seed=seed)
    if epochs:
        config.epochs = epochs
    return train(model, config=config)


def activate_adapter(version: str) -> AdapterArtifact:
    artifact = AdapterArtifact.objects.filter(version=version).first()
    if artifact is None:
        raise TrainingError(f"no adapter {version!r} is stored")
    activate(artifact)
    return artifact
