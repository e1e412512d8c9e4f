"""Search by typed words (against the text vectors) or by a photo (against the image vectors)."""

from __future__ import annotations

import logging
from typing import Any

from . import breaker, registry
from .conf import get_settings
from .exceptions import IndexUnavailable
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


def search_text(query: str, *, model: Any = None, limit: int = 20, **filters: Any) -> SimilarResult:
    """Semantic search: the typed query against the objects' text vectors. ``filters`` are the
    spec's named filters (those that need no object to compare with)."""
    query = " ".join(query.split())
    if not query:
        return SimilarResult(ResultStatus.OK, message="empty query")
    vector = registry.text_encoder().encode([query])[0].tolist()
    return _search("text", vector, model=model, limit=limit, filters=filters)


def search_image(fp: Any, *, model: Any = None, limit: int = 20, name: str = "upload", **filters: Any) -> SimilarResult:
    """Visual search: a photo (path or file object) against the objects' image vectors.

    Raises :class:`~similarity.exceptions.EncodingError` when the upload is not a usable image.
    """
    from .encoders.image_decoding import open_image

    image = open_image(fp, name=name, max_pixels=get_settings().max_image_pixels)
    vector = registry.image_encoder().encode([image])[0].tolist()
    return _search("image", vector, model=model, limit=limit, filters=filters)
