"""Process-wide instances built from settings: specs, encoders and one vector index per spec.

Built lazily on first use, so nothing heavy happens at import time or before a worker forks;
``reset()`` drops them (settings changed, or a forked child must not reuse its parent's).
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .conf import get_settings
from .exceptions import SimilarityConfigError
from .specs import IndexSpec

_lock = threading.RLock()
_cache: dict[str, Any] = {}


def _cached(key: str, build: Any) -> Any:
    with _lock:
        if key not in _cache:
            _cache[key] = build()
        return _cache[key]


def reset(*, encoders: bool = False) -> None:
    """Drop specs and the indexes; encoders too when ``encoders`` (a forked worker child).

    Encoders are cached under their configuration, so a settings change that does not touch
    them keeps the loaded models (loading takes seconds).
    """
    from . import breaker
    from .training import adapt

    breaker.close()
    adapt.forget()
    with _lock:
        for key in list(_cache):
            if key.startswith("index:"):
                _cache.pop(key).close()
            elif encoders or not key.startswith(("text:", "image:")):
                _cache.pop(key)


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "SIMILARITY":
        reset()


def specs() -> dict[str, IndexSpec]:
    def build() -> dict[str, IndexSpec]:
        result = {}
        for path in get_settings().specs:
            spec = import_string(path)()
            result[spec.label] = spec
        return result

    return _cached("specs", build)  # type: ignore[no-any-return]


def get_spec(model: Any = None) -> IndexSpec:
    """The spec of ``model`` (a model class, an instance, a label or a spec); with none given,
    the only spec (an error when there are several: say which)."""
    if isinstance(model, IndexSpec):
        return model
    registered = specs()
    if model is None:
        if len(registered) == 1:
            return next(iter(registered.values()))
        if not registered:
            raise SimilarityConfigError("SIMILARITY['SPECS'] is empty: no model is indexed.")
        raise SimilarityConfigError(
            f"several models are indexed ({', '.join(registered)}); say which one (model=...)."
        )
    label = model if isinstance(model, str) else model._meta.label_lower
    try:
        return registered[label.lower()]
    except KeyError:
        raise SimilarityConfigError(f"no similarity spec is registered for {label}") from None


def text_encoder() -> Any:
    """The text encoder indexing and search use: the base model, through the live adapter."""
    from .training.adapt import wrap

    return wrap("text", base_text_encoder())


def image_encoder() -> Any:
    """The image encoder indexing and search use: the base model, through the live adapter."""
    from .training.adapt import wrap

    return wrap("image", base_image_encoder())


def base_text_encoder() -> Any:
    from .encoders.text_model import SentenceTransformerTextEncoder

    conf = get_settings()
    return _cached(
        f"text:{conf.text_model}:{conf.device}:{conf.batch_size}:{conf.cpu_batch_size}:{conf.half_precision}"
        f":{conf.text_quantization}:{conf.cpu_runtime}",
        lambda: SentenceTransformerTextEncoder(
            conf.text_model, device=conf.device, batch_size=conf.batch_size,
            half_precision=conf.half_precision, cpu_batch_size=conf.cpu_batch_size,
            quantization=conf.text_quantization, onnx=conf.cpu_runtime == "onnx",
        ),
    )


def base_image_encoder() -> Any:
    from .encoders.image_model import TimmImageEncoder

    conf = get_settings()
    return _cached(
        f"image:{conf.image_model}:{conf.image_checkpoint}:{conf.device}:{conf.batch_size}:"
        f"{conf.cpu_batch_size}:{conf.half_precision}:{conf.cpu_runtime}",
        lambda: TimmImageEncoder(
            conf.image_model, checkpoint=conf.image_checkpoint, device=conf.device,
            batch_size=conf.batch_size, half_precision=conf.half_precision, cpu_batch_size=conf.cpu_batch_size,
            onnx=conf.cpu_runtime == "onnx",
        ),
    )


def vector_dims() -> dict[str, int]:
    return {"image": image_encoder().dim, "text": text_encoder().dim}


def vector_index(model: Any = None) -> Any:
    """The live index of one spec's collection (each spec has its own)."""
    spec = get_spec(model)
    conf = get_settings().index
    return _cached(
        f"index:{spec.label}",
        lambda: import_string(conf.backend)(
            url=conf.url, api_key=conf.api_key, path=conf.path,
            collection=spec.collection_name(conf.collection),
            lock_timeout=conf.lock_timeout, timeout=conf.timeout, tuning=conf,
        ),
    )


def open_indexes() -> list[Any]:
    """The indexes this process has opened (to let go of them after a task)."""
    with _lock:
        return [value for key, value in _cache.items() if key.startswith("index:")]


def fusion_weights(spec: Any = None) -> dict[str, float]:
    """The fusion weights for ``spec``: :func:`similarity.fusion.weights_for` (label-free rule)."""
    from .fusion import weights_for

    return weights_for(get_spec(spec))
