"""Search by typed words or by a photo.

With a trained adapter live, the image and text vectors share one joint space
(:mod:`similarity.training`): typed words are then matched against the text vectors *and* the
image vectors (a photo that shows "red leather strap" is found though the title does not say
it), and a photo against the image and the text vectors, fused by the label-free weights. With
the plain encoders, words reach the text vectors and photos the image vectors only.
"""

from __future__ import annotations

import logging
from typing import Any

from . import breaker, registry
from .conf import get_settings
from .exceptions import IndexUnavailable
from .index.base import FusedQuery
from .query import load_hits, spec_filter
from .results import ResultStatus, SimilarResult

logger = logging.getLogger(__name__)


def _search(using: str, vector: list[float], *, model: Any, limit: int, filters: dict[str, Any]) -> SimilarResult:
    spec = registry.get_spec(model)
    search_filter = spec_filter(spec, filters)
    down = breaker.is_open(spec.label)
    if down is not None:
        return SimilarResult(ResultStatus.UNAVAILABLE, message=down)
    try:
        hits = registry.vector_index(spec).query(using, vector, limit=limit, filter=search_filter or None)
    except IndexUnavailable as exc:
        logger.warning("search by %s: index unavailable: %s", using, exc)
        breaker.trip(spec.label, str(exc))
        return SimilarResult(ResultStatus.UNAVAILABLE, message=str(exc))
    ranked = [(h.score, {using: h.score}, h.payload["pk"]) for h in hits]
    return SimilarResult(ResultStatus.OK, load_hits(spec, ranked, filters))


def joint_space() -> bool:
    """True when image and text vectors live in one space (a trained joint adapter is live; a
    text-only one, ``similarity_train --text``, leaves the photos in their own space)."""
    from .training.adapt import active_is_joint

    return active_is_joint()


def _search_joint(vector: list[float], *, model: Any, limit: int, filters: dict[str, Any]) -> SimilarResult:
    """One query vector against both named vectors, fused (candidates from each, exact cosines);
    the image side moved towards the photos of the best text matches (:mod:`.feedback`)."""
    spec = registry.get_spec(model)
    search_filter = spec_filter(spec, filters)
    down = breaker.is_open(spec.label)
    if down is not None:
        return SimilarResult(ResultStatus.UNAVAILABLE, message=down)
    try:
        index, weights = registry.vector_index(spec), registry.fusion_weights(spec)
        found = index.query_fused(FusedQuery(
            vectors={"text": vector, "image": _image_side(index, vector, search_filter, weights)},
            weights=weights,
            fetch=max(get_settings().candidates, limit * 4), limit=limit, filter=search_filter or None,
        ))
    except IndexUnavailable as exc:
        logger.warning("joint search: index unavailable: %s", exc)
        breaker.trip(spec.label, str(exc))
        return SimilarResult(ResultStatus.UNAVAILABLE, message=str(exc))
    ranked = [(h.score, h.scores, h.payload["pk"]) for h in found]
    return SimilarResult(ResultStatus.OK, load_hits(spec, ranked, filters))


def _image_side(index: Any, vector: list[float], search_filter: Any, weights: dict[str, float]) -> list[float]:
    """The typed words' vector for the image vectors: :func:`.feedback.feedback_vector` over the
    image vectors of the :data:`~.feedback.FEEDBACK_K` best text matches (within the filter)."""
    import numpy as np

    from .feedback import FEEDBACK_K, feedback_vector

    if weights.get("image", 0.0) <= 0:
        return vector  # the photos take no part: no need to ask for them
    hits = index.query("text", vector, limit=FEEDBACK_K, filter=search_filter or None)
    stored = index.retrieve([h.id for h in hits], with_vectors=True) if hits else {}
    images = [point.vectors["image"] for point in stored.values() if point.vectors.get("image") is not None]
    return feedback_vector(np.asarray(vector, dtype=np.float32), np.asarray(images, dtype=np.float32)).tolist()


def search_text(query: str, *, model: Any = None, limit: int = 20, **filters: Any) -> SimilarResult:
    """Semantic search: the typed query against the objects' text vectors. ``filters`` are the
    spec's named filters (those that need no object to compare with)."""
    query = " ".join(query.split())
    if not query:
        return SimilarResult(ResultStatus.OK, message="empty query")
    vector = registry.text_encoder().encode([query])[0].tolist()
    if joint_space():
        return _search_joint(vector, model=model, limit=limit, filters=filters)
    return _search("text", vector, model=model, limit=limit, filters=filters)


#: views of a shopper's photo whose vectors are averaged (multi-crop test-time augmentation):
#: the whole photo, and its centre (a product on a shelf or in a cluttered photo fills the
#: centre more than the edges). On 150 simulated cluttered photos hit@1 went 0.25 → 0.70 with
#: the adapter (docs/training.md).
PHOTO_VIEWS: tuple[str, ...] = ("full", "centre")
#: the share of each side the centre view keeps
CENTRE_CROP = 0.6


def photo_views(image: Any, views: tuple[str, ...] = PHOTO_VIEWS) -> list[Any]:
    """The crops of ``image`` that are encoded: ``full``, ``centre``, ``flip`` (mirrored)."""
    from PIL import ImageOps

    out = []
    for view in views:
        if view == "full":
            out.append(image)
        elif view == "centre":
            width, height = image.size
            dx, dy = int(width * (1 - CENTRE_CROP) / 2), int(height * (1 - CENTRE_CROP) / 2)
            out.append(image.crop((dx, dy, width - dx, height - dy)))
        elif view == "flip":
            out.append(ImageOps.mirror(image))
        else:
            raise ValueError(f"unknown photo view {view!r}")
    return out


def search_image(
    fp: Any, *, model: Any = None, limit: int = 20, name: str = "upload", views: tuple[str, ...] | None = None,
    **filters: Any,
) -> SimilarResult:
    """Visual search: a photo (path or file object) against the objects' image vectors.
    ``views``: the crops whose vectors are averaged (:data:`PHOTO_VIEWS` by default).

    Raises :class:`~similarity.exceptions.EncodingError` when the upload is not a usable image.
    """
    import numpy as np

    from .encoders.image_decoding import open_image

    image = open_image(fp, name=name, max_pixels=get_settings().max_image_pixels)
    encoded = registry.image_encoder().encode(photo_views(image, views or PHOTO_VIEWS))
    mean = encoded.mean(axis=0)
    vector = (mean / max(float(np.linalg.norm(mean)), 1e-12)).tolist()
    # The image vectors only, also with an adapter live (then the photo is encoded into the joint
    # space): adding the text match lowered hit@1 on simulated shopper photos (docs/training.md).
    return _search("image", vector, model=model, limit=limit, filters=filters)
