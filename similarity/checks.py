"""System checks: a misconfiguration is an error with an id, not a traceback at first use."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Warning, register
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
    from django.conf import settings as django_settings

    if conf.beacon_cache not in getattr(django_settings, "CACHES", {"default": {}}):
        errors.append(Error(f"SIMILARITY['BEACON_CACHE'] {conf.beacon_cache!r} is not an alias in CACHES; "
                            "the widget beacon counts into that cache.", id="similarity.E013"))
    errors += _views_cache_errors(conf.views_cache)
    if conf.cpu_runtime == "onnx":
        errors += _onnx_runtime_warnings(conf.text_quantization)
    if conf.index.backend.endswith("QdrantEdgeIndex"):
        errors += _embedded_index_errors(conf.dispatcher)
        errors += _embedded_index_size_warnings(conf.index.path)
    return errors


def _onnx_runtime_warnings(text_quantization: str) -> list[Any]:
    """``CPU_RUNTIME = "onnx"`` needs onnxruntime and onnx (the exporter); without them the CPU
    models run on torch, and the int8 text model is torch's: another model version than the
    processes that have them (each would re-encode what the other wrote)."""
    from importlib.util import find_spec

    missing = [package for package in ("onnxruntime", "onnx") if find_spec(package) is None]  # found, not imported
    if not missing:
        return []
    int8 = (" The int8 text model is then torch's, another model version than in processes that have "
            "them: install them everywhere, or set TEXT_QUANTIZATION to ''.") if text_quantization else ""
    return [Warning(f"SIMILARITY['CPU_RUNTIME'] is 'onnx' but {' and '.join(missing)} cannot be imported: the "
                    f"models run on torch on a CPU.{int8}", id="similarity.W016")]


def _views_cache_errors(alias: str) -> list[Any]:
    """The recent views' cache exists, and every web process sees the same one (a local-memory
    cache is per process: fine for one process, e.g. the embedded index's single one)."""
    from django.conf import settings as django_settings

    if not alias:
        return []  # the views stay in the session
    caches = getattr(django_settings, "CACHES", {"default": {}})
    if alias not in caches:
        return [Error(f"SIMILARITY['VIEWS_CACHE'] {alias!r} is not an alias in CACHES; the visitors' recent "
                      "views are kept in that cache ('' keeps them in the session).", id="similarity.E014")]
    backend = str(caches[alias].get("BACKEND", ""))
    workers = _gunicorn_workers()
    if backend.endswith("LocMemCache") and workers > 1:
        return [Warning(
            f"SIMILARITY['VIEWS_CACHE'] {alias!r} is a local-memory cache, but gunicorn is set to {workers} "
            "workers: each keeps its own recent views (recommended_for_you sees only those of the worker that "
            "serves the page). Point it at a cache every process shares (Redis, Memcached).",
            id="similarity.W015",
        )]
    return []


#: where one embedded (Qdrant Edge) process stops being the right choice (docs/sizing.md): between
#: the largest size measured good (100k points: exact top 10) and the size measured not good with
#: the defaults (1M: recall@10 0.91, 0.41 under a selective filter; a 44-minute build on 2 cores)
EDGE_MAX_POINTS = 500_000


def _embedded_index_size_warnings(path: str) -> list[Any]:
    """From the sizes the embedded index records beside its pointer (it is never opened here:
    only one process may hold a shard)."""
    import json
    from pathlib import Path

    warnings = []
    for stats_file in sorted(Path(path).glob("*.stats.json")):
        try:
            points = int(json.loads(stats_file.read_text()).get("points", 0))
        except (OSError, ValueError, TypeError):
            continue
        if points > EDGE_MAX_POINTS:
            warnings.append(Warning(
                f"the embedded index {stats_file.name.removesuffix('.stats.json')} holds {points:,} points, more "
                f"than one Qdrant Edge process is sized for ({EDGE_MAX_POINTS:,}; docs/sizing.md). Use the "
                "Qdrant server (SIMILARITY['INDEX']['BACKEND'] = 'similarity.index.qdrant.QdrantServerIndex').",
                id="similarity.W012",
            ))
    return warnings


def _gunicorn_workers() -> int:
    """Workers a gunicorn started with this environment would run (WEB_CONCURRENCY or -w/--workers
    in GUNICORN_CMD_ARGS); 1 when neither says."""
    import os
    import shlex

    args = shlex.split(os.environ.get("GUNICORN_CMD_ARGS", ""))
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--workers=") else (
            args[i + 1] if arg in ("-w", "--workers") and i + 1 < len(args) else None)
        if value is not None and value.isdigit():
            return int(value)
    concurrency = os.environ.get("WEB_CONCURRENCY", "")
    return int(concurrency) if concurrency.isdigit() else 1


def _embedded_index_errors(dispatcher: str) -> list[Any]:
    """Qdrant Edge serves one process: configurations that would need two cannot work."""
    errors = []
    if dispatcher == "similarity.tasks.dispatch":
        from celery import current_app

        celery_conf = current_app.conf
        if not celery_conf.task_always_eager:
            errors.append(Error(
                "the embedded index (Qdrant Edge) serves one process, but Celery sends the "
                f"similarity tasks to a broker ({celery_conf.broker_url or 'the default'}) for a separate "
                "worker. Set CELERY_TASK_ALWAYS_EAGER = True (tasks run in the web process) or use the "
                "Qdrant server (SIMILARITY['INDEX']['BACKEND'] = 'similarity.index.qdrant.QdrantServerIndex').",
                id="similarity.E010",
            ))
    workers = _gunicorn_workers()
    if workers > 1:
        errors.append(Error(
            f"the embedded index (Qdrant Edge) serves one process, but gunicorn is set to {workers} "
            "workers (WEB_CONCURRENCY / GUNICORN_CMD_ARGS). Run one worker with threads, or use the "
            "Qdrant server.", id="similarity.E011",
        ))
    return errors
