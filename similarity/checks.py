"""System checks: a misconfiguration is an error with an id, not a traceback at first use."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register
from django.utils.module_loading import import_string


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from .conf import get_settings
    from .exceptions import SimilarityConfigError

    errors: list[Any] = []
    try:
        conf = get_settings()
    except SimilarityConfigError as exc:
        return [Error(str(exc), id="similarity.E001")]
    if not conf.specs:
        errors.append(Error(
            "SIMILARITY['SPECS'] is empty: list the IndexSpec classes of the models to index, "
            "e.g. SIMILARITY = {'SPECS': ['shop.specs.ProductSpec']}.", id="similarity.E008",
        ))
    for path in conf.specs:
        try:
            import_string(path)
        except ImportError as exc:
            errors.append(Error(f"SIMILARITY['SPECS'] entry {path!r} cannot be imported: {exc}",
                                id="similarity.E002"))
    try:
        import_string(conf.index.backend)
    except ImportError as exc:
        errors.append(Error(f"SIMILARITY['INDEX']['BACKEND'] {conf.index.backend!r} cannot be "
                            f"imported: {exc}", id="similarity.E003"))
    if conf.index.backend.endswith("QdrantServerIndex") and not conf.index.url and not conf.index.path:
        errors.append(Error("the Qdrant server index needs SIMILARITY['INDEX']['URL'] (QDRANT_URL).",
                            id="similarity.E004"))
    weights = conf.weights
    if set(weights) - {"image", "text"} or any(w < 0 for w in weights.values()) or not sum(weights.values()):
        errors.append(Error("SIMILARITY['WEIGHTS'] must give non-negative weights for 'image' and "
                            "'text' with a positive sum.", id="similarity.E005"))
    if conf.device not in {"auto", "cpu"} and not conf.device.startswith("cuda"):
        errors.append(Error(f"SIMILARITY['DEVICE'] must be auto, cpu or cuda[:N], not {conf.device!r}.",
                            id="similarity.E006"))
    if conf.batch_size < 1:
        errors.append(Error("SIMILARITY['BATCH_SIZE'] must be at least 1.", id="similarity.E007"))
    try:
        import_string(conf.dispatcher)
    except ImportError as exc:
        errors.append(Error(f"SIMILARITY['DISPATCHER'] {conf.dispatcher!r} cannot be imported "
                            f"({exc}); no change would ever reach the index.", id="similarity.E009"))
    return errors
