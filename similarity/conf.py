"""Typed access to the ``SIMILARITY`` setting.

Read only through :func:`get_settings`; the value is cached and reset when tests change the
setting (the pattern of django-filter's lazy settings object).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from .encoders.image_model import DEFAULT_IMAGE_MODEL
from .encoders.text_model import DEFAULT_TEXT_MODEL
from .exceptions import SimilarityConfigError


@dataclass(frozen=True)
class IndexSettings:
    backend: str = "similarity.index.edge.QdrantEdgeIndex"
    url: str = ""
    api_key: str = ""
    path: str = "var/qdrant-edge"
    #: prefix of the collection names: each spec gets ``<collection>_<app>_<model>``
    collection: str = "similarity"
    lock_timeout: float = 10.0
    timeout: float = 5.0
    #: HNSW graph: edges per node and candidates while building; candidates while searching
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    hnsw_ef: int = 128
    #: candidates while searching with a payload filter that selects (match, match_any, ranges,
    #: ids): the walk also visits points the filter rejects, so it needs a longer list to find
    #: ``limit`` that pass; 0: 4 × ``hnsw_ef`` (docs/benchmarks.md, "Filtered searches")
    hnsw_ef_filtered: int = 0
    #: a filter relative to the query object (``find_similar(obj, same_category=True)``: its own
    #: category) keeps the points around the query, so the walk from the query needs no
    #: ``hnsw_ef_filtered``: ``hnsw_ef`` in an index of up to this many points, then
    #: ``hnsw_ef × √(points / near_ef_points)``, at most ``hnsw_ef_filtered`` (a graph of more points
    #: needs a longer list for the same recall: at 1M the own category found 0.960 with 128).
    #: 0: such a filter is searched like any other (docs/benchmarks.md, "The query's own category")
    near_ef_points: int = 100_000
    #: a search whose filter leaves at most this much vector data (KB of float32 of the vector
    #: searched: 6.6 KB per point for the fused vector, so about 6,150 points), estimated from
    #: the payload indexes before the search, scores every point that passes (exact, recall 1)
    #: instead of walking the graph. A filter far from the query is found only this way at 1M
    #: (a real category of 5,270 points: the graph 0.358, exact 1.000 at p99 9.75 ms); the limit
    #: is where such a scan costs about the 10 ms goal on a 2-core machine (docs/benchmarks.md,
    #: "Real categories at scale"). 0: always walk the graph (Qdrant's own full-scan threshold
    #: still applies)
    exact_filter_kb: int = 40_000
    #: ACORN for filtered searches: with a filter that leaves few points, the HNSW search also
    #: walks neighbours' neighbours, so it still finds the filtered points (slower per query)
    acorn: bool = False
    #: segments with more vector data than this (KB) get an HNSW graph when optimised; smaller
    #: ones are scanned (Qdrant's default threshold)
    indexing_threshold_kb: int = 10_000
    #: "int8": scalar quantisation, kept in RAM, with rescoring by the original vectors; "": none
    quantization: str = ""
    #: original vectors on disk (memory-mapped) instead of in RAM
    on_disk: bool = False
    #: how a new generation stores the fused vector: "float32" (the default) or "float16": a
    #: quarter less vector memory per point (1M points, originals on disk: 10.5 GB of files
    #: instead of 13.7), the ranking rescored with the image and text vectors, which stay
    #: float32; measured slower on exact scans at 1M with the vectors on disk, and no faster
    #: elsewhere, so not the default. A generation keeps the type it was built with until the
    #: next rebuild or background re-optimise (Edge), which builds with the setting
    #: (docs/benchmarks.md, "The fused vector in float16")
    fused_datatype: str = "float32"
    #: Qdrant Edge: vectors written but not in an HNSW graph yet (each point has one per
    #: modality, and the fused one) that make the index re-optimise in the background, in a child process, while it
    #: keeps answering (similarity.index.edge_optimize); 0: only rebuilds optimise
    optimize_after: int = 20_000
    #: Qdrant Edge: read a generation's files into the page cache in a background thread when a
    #: process opens it, so that its first queries do not wait on the disk (similarity.index.preload)
    preload: bool = True

    def exact_for(self, points: int, dims: int) -> bool:
        """Whether a filtered search that leaves ``points`` of ``dims`` floats scores every
        point that passes instead of walking the graph. Counted in float32 whatever the stored
        type (``fused_datatype``): the limit is a cost, and a float16 scan of a real filter
        cost nearly as much (docs/benchmarks.md, "The fused vector in float16")."""
        return self.exact_filter_kb > 0 and points * dims * 4 <= self.exact_filter_kb * 1024

    @property
    def full_scan_kb(self) -> int:
        """Qdrant's full-scan threshold for a new generation's fused vector (KB of float32, given
        to the engine as the same points in the stored type: :func:`~.index.base.engine_kb`; the
        other named vectors keep ``indexing_threshold_kb``): the engine's own planner scans a
        filter that leaves less. With int8 quantisation it is twice ``exact_filter_kb`` (at
        least), so that the filters :meth:`exact_for` picks are scanned on the int8 copy and
        rescored with the originals (``exact=True`` would score the originals of every passing
        point); twice, because the planner decides per segment from a rougher estimate (the
        largest count the conditions allow, or a sample), and a filter just under the threshold
        was walked through the graph now and then. The planner also scans a whole segment
        holding fewer fused vectors than this (about 12,300 at the default limit), filter or
        not (docs/benchmarks.md, "int8 scans")."""
        if self.quantization and self.exact_filter_kb > 0:
            return max(self.indexing_threshold_kb, 2 * self.exact_filter_kb)
        return self.indexing_threshold_kb

    def scans_int8(self, points: int, dims: int, full_scan_kb: int | None) -> bool:
        """Whether a filter that :meth:`exact_for` picks is left to the engine's own scan of the
        int8 copy (rescored with the originals) rather than searched with ``exact=True``: with
        int8 quantisation, when half the generation's full-scan threshold (fixed when it was
        built, see :attr:`full_scan_kb`; ``None``: unknown) covers it."""
        return bool(self.quantization) and full_scan_kb is not None and points * dims * 4 * 2 <= full_scan_kb * 1024

    def search_ef(self, *, filtered: bool) -> int:
        """``hnsw_ef`` for a search, with or without a selecting payload filter."""
        if not filtered:
            return self.hnsw_ef
        return self.hnsw_ef_filtered or 4 * self.hnsw_ef

    def near_ef(self, points: int | None) -> int:
        """``hnsw_ef`` for a filter relative to the query in an index of ``points`` points
        (:attr:`near_ef_points`); an unknown size gets the filtered list."""
        if points is None:
            return self.search_ef(filtered=True)
        ef = self.hnsw_ef
        if points > self.near_ef_points:
            ef = math.ceil(ef * math.sqrt(points / self.near_ef_points))
        return min(ef, self.search_ef(filtered=True))


@dataclass(frozen=True)
class SimilaritySettings:
    #: dotted paths of the IndexSpec classes to index; empty is a system-check error
    specs: tuple[str, ...] = ()
    index: IndexSettings = field(default_factory=IndexSettings)
    text_model: str = DEFAULT_TEXT_MODEL
    image_model: str = DEFAULT_IMAGE_MODEL
    # A local checkpoint for the image model; empty = the offline EfficientNet-Lite0 package for
    # the default model, hub weights for any other timm name.
    image_checkpoint: str = ""
    device: str = "auto"
    batch_size: int = 32
    #: rows per forward pass on a CPU (larger batches are slower there; see encoders/base.py)
    cpu_batch_size: int = 8
    half_precision: bool = True
    #: "int8" (the default): on a CPU the text model's weights are int8 (per output channel,
    #: activations quantised per pass, one text per pass): `similarity_reindex --all` 44-46
    #: against 33 products/s with float32, min cosine 0.992 to the float32 vectors, the same
    #: evaluation on flipkart-1050 (fused p@10 0.7703 -> 0.7714; docs/benchmarks.md); its own
    #: model version ("+int8-onnx"; "+int8" when torch quantises it instead). "": float32. On
    #: a GPU the model runs in float16 either way.
    text_quantization: str = "int8"
    #: "onnx": on a CPU the float32 models run on ONNX Runtime (exported in memory from the same
    #: weights, checked against torch; the same vectors, so the same model version; 2.3x the
    #: images/s and 1.3x the texts/s of torch on the bench machine, docs/benchmarks.md), falling
    #: back to torch when it is missing or differs; "torch": torch only
    cpu_runtime: str = "onnx"
    max_images: int = 4
    max_image_pixels: int = 90_000_000
    #: the same cap for photos decoded in the web process (the admin explorer's uploads), which
    #: has less memory to spare than a worker; a JPEG counts at the reduced scale it is read at
    web_max_image_pixels: int = 20_000_000
    max_text_chars: int = 2000
    # Used only when the settings set WEIGHTS explicitly; otherwise fusion.weights_for chooses
    # them without labels (docs/training.md). 0.3/0.7 was the best on flipkart-1050.
    weights: dict[str, float] = field(default_factory=lambda: {"image": 0.3, "text": 0.7})
    candidates: int = 100
    #: after the vector store is found unavailable, reads answer "unavailable" at once this long
    breaker_seconds: float = 10.0
    #: called after commit with (label, index_ids, remove_ids); the app's Celery tasks by default
    dispatcher: str = "similarity.tasks.dispatch"
    queue: str = "similarity"
    #: the analytics beacon counts into this cache (``CACHES`` alias) and the counts are flushed
    #: into ``WidgetStat`` by a periodic task and when the admin page opens (docs/behaviour.md)
    beacon_cache: str = "default"
    #: None: buffer in the cache only when it is shared by every process and increments
    #: atomically (Redis, Memcached); True / False: always / never (one UPDATE per beacon)
    beacon_buffer: bool | None = None
    #: the visitors' recent views live in this cache (``CACHES`` alias) under a digest of their
    #: session key, so a product view saves no session; "" keeps them in the session (a save
    #: per product page; docs/behaviour.md)
    views_cache: str = "default"


CPU_RUNTIMES = frozenset({"onnx", "torch"})
#: the types a generation's fused vector may be stored in
FUSED_DATATYPES = frozenset({"float32", "float16"})
_INDEX_KEYS = {f.upper(): f for f in IndexSettings.__dataclass_fields__}
_TOP_KEYS = {f.upper(): f for f in SimilaritySettings.__dataclass_fields__}


def _build(raw: dict[str, Any]) -> SimilaritySettings:
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _TOP_KEYS:
            raise SimilarityConfigError(f"SIMILARITY[{key!r}] is not a known setting.")
        name = _TOP_KEYS[key]
        if name == "index":
            unknown = set(value) - set(_INDEX_KEYS)
            if unknown:
                raise SimilarityConfigError(f"SIMILARITY['INDEX'] has unknown keys {sorted(unknown)}.")
            value = IndexSettings(**{_INDEX_KEYS[k]: v for k, v in value.items()})
        elif name == "specs":
            value = tuple(value)
        elif name == "weights":
            value = dict(value)
        kwargs[name] = value
    index = kwargs.get("index")
    if index is not None and index.fused_datatype not in FUSED_DATATYPES:
        raise SimilarityConfigError(
            f"SIMILARITY['INDEX']['FUSED_DATATYPE'] is {index.fused_datatype!r}: choose one of "
            f"{sorted(FUSED_DATATYPES)}.")
    if kwargs.get("cpu_runtime", "onnx") not in CPU_RUNTIMES:
        raise SimilarityConfigError(
            f"SIMILARITY['CPU_RUNTIME'] is {kwargs['cpu_runtime']!r}: choose one of {sorted(CPU_RUNTIMES)}.")
    return SimilaritySettings(**kwargs)


@lru_cache(maxsize=1)
def get_settings() -> SimilaritySettings:
    return _build(getattr(django_settings, "SIMILARITY", {}))


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    # The registry listens too (its own receiver), so this module imports nothing of ours
    # beyond the encoders' default names and the exceptions.
    if setting == "SIMILARITY":
        get_settings.cache_clear()
