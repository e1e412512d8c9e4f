"""Process-wide instances built from settings: specs, encoders and the vector index.

Built lazily on first use, so nothing heavy happens at import time or before a worker forks;
``reset()`` drops them (settings changed, or a forked child must not reuse its parent's).
"""

from __future__ import annotations

import threading
from typing import Any

from django.utils.module_loading import import_string

from .conf import get_settings
from .exceptions import SimilarityConfigError

_lock = threading.RLock()
_cache: dict[str, Any] = {}


def _cached(key: str, build: Any) -> Any:
    with _lock:
        if key not in _cache:
            _cache[key] = build()
        return _cache[key]


def reset(*, encoders: bool = False) -> None:
    """Drop specs and the index; encoders too when ``encoders`` (a forked worker child).

    Encoders are cached under their configuration, so a settings change that does not touch
    them keeps the loaded models (loading takes seconds).
    """
    with _lock:
        for key in list(_cache):
            if key.startswith("index"):
                _cache.pop(key).close()
            elif encoders or not key.startswith(("text:", "image:")):
                _cache.pop(key)


def specs() -> dict[str, Any]:
    def build() -> dict[str, Any]:
        result = {}
        for path in get_settings().specs:
            spec = import_string(path)()
            result[spec.label] = spec
        return result

    return _cached("specs", build)  # type: ignore[no-any-return]


def spec_for(model_or_label: Any) -> Any:
    label = model_or_label if isinstance(model_or_label, str) else model_or_label._meta.label_lower
    try:
        return specs()[label.lower()]
    except KeyError:
        raise SimilarityConfigError(f"no similarity spec is registered for {label}") from None


def text_encoder() -> Any:
    from .encoders.text import SentenceTransformerTextEncoder

    conf = get_settings()
    return _cached(
        f"text:{conf.text_model}:{conf.device}:{conf.batch_size}:{conf.cpu_batch_size}:{conf.half_precision}",
        lambda: SentenceTransformerTextEncoder(
            conf.text_model, device=conf.device, batch_size=conf.batch_size,
            half_precision=conf.half_precision, cpu_batch_size=conf.cpu_batch_size,
        ),
    )


def image_encoder() -> Any:
    from .encoders.image import TimmImageEncoder

    conf = get_settings()
    return _cached(
        f"image:{conf.image_model}:{conf.image_checkpoint}:{conf.device}:{conf.batch_size}:"
        f"{conf.cpu_batch_size}:{conf.half_precision}",
        lambda: TimmImageEncoder(
            conf.image_model, checkpoint=conf.image_checkpoint, device=conf.device,
            batch_size=conf.batch_size, half_precision=conf.half_precision, cpu_batch_size=conf.cpu_batch_size,
        ),
    )


def vector_index() -> Any:
    conf = get_settings().index
    return _cached(
        "index",
        lambda: import_string(conf.backend)(
            url=conf.url, api_key=conf.api_key, path=conf.path, collection=conf.collection,
            lock_timeout=conf.lock_timeout, timeout=conf.timeout,
        ),
    )
