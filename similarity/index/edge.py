"""Qdrant Edge: the Qdrant engine in-process, a shard on local disk (the embedded default).

Layout under ``path``: one directory per generation (``<collection>-<stamp>``) and a pointer
file ``<collection>.current`` naming the live one. A rebuild fills a new directory and then
replaces the pointer with ``os.replace`` (atomic), so readers never see an empty index; a reader
notices the new pointer on its next call and reopens.

Only one process at a time may open a shard. Before ``EdgeShard.load`` is ever called, the
process takes its own advisory lock on the shard (:class:`~.shard_lock.ShardLock`), waiting up to
``lock_timeout`` seconds for another process to let go, then raises ``IndexUnavailable`` with the
holder's pid; a refused process never touches the shard, so the holder keeps writing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..conf import IndexSettings
from ..exceptions import IndexUnavailable
from .base import (
    FUSED,
    PARTIAL,
    FusedHit,
    FusedQuery,
    Hit,
    PointData,
    SearchFilter,
    built_full_scan_kb,
    datatype_name,
    engine_kb,
    float32_kb,
    public_payload,
    stored_point,
    with_fused,
)
from .edge_fused import query_fused, to_edge_filter
from .edge_optimize import optimize_in_child, reoptimize_live, start_background_reoptimize, write_stats
from .shard_lock import ShardLock

logger = logging.getLogger(__name__)
#: seconds a generation's point count is reused for :meth:`IndexSettings.near_ef`
SIZE_TTL = 60.0

# qdrant-edge-py 0.9 turns a Python bool in MatchValue into the integer 1, so a bool payload
# never matches. Booleans are therefore stored, indexed and matched as 0/1 integers here.
_SCHEMA_TYPES = {"keyword": "Keyword", "integer": "Integer", "float": "Float", "bool": "Integer"}


def _store(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: int(v) if isinstance(v, bool) else v for k, v in payload.items()}


def _stamp() -> str:
    return time.strftime("%Y%m%d%H%M%S") + f"-{uuid.uuid4().hex[:6]}"


class QdrantEdgeIndex:
    def __init__(
        self, *, path: str, collection: str = "products", lock_timeout: float = 10.0, tuning: Any = None,
        **_: Any,
    ) -> None:
        self.tuning = tuning or IndexSettings()
        self.root = Path(path)
        self.collection = collection
        self.lock_timeout = lock_timeout
        self._shard: Any = None
        self._dir: str | None = None
        self._shard_lock: ShardLock | None = None
        self._pinned: str | None = None  # a generation being rebuilt: not the live pointer
        self._lock = threading.RLock()
        self._bool_fields: set[str] = set()
        self.dims: dict[str, int] = {}
        self.payload_schema: dict[str, str] = {}
        # a background re-optimise copies the live points; the ids written meanwhile are journaled
        self._compacting = False
        self._journal: set[str] | None = None
        self._written_since_check = 0
        self._retired: str | None = None  # the generation the last re-optimise replaced
        self._vectors: dict[str, int] = {}  # the open generation's named vectors and their sizes
        self._full_scan_kb: dict[str, int] = {}  # and each one's full-scan threshold (KB)
        self._fused_type: str | None = None  # how it stores the fused vector (None: it has none)
        self._size: tuple[float, int] | None = None  # (when read, points) of the open generation
        #: the thread reading the open generation's files into the page cache (``PRELOAD``),
        #: stopped when the generation is closed
        self.preloading: threading.Thread | None = None
        self._preload_stop = threading.Event()

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def _load(self, payload: dict[str, Any] | None) -> dict[str, Any]:
        payload = public_payload(payload)
        for key in self._bool_fields & payload.keys():
            if payload[key] is not None:
                payload[key] = bool(payload[key])
        return payload

    # -- generations ------------------------------------------------------------------------
    @property
    def pointer(self) -> Path:
        return self.root / f"{self.collection}.current"

    def _live_dir(self) -> str | None:
        if self._pinned:
            return self._pinned
        try:
            return self.pointer.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _write_pointer(self, name: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.pointer.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(name)
        os.replace(tmp, self.pointer)

    def _open(self, name: str) -> Any:
        from qdrant_edge import EdgeShard

        lock = ShardLock(self.root / name)
        lock.acquire(self.lock_timeout)  # never load a shard without holding its lock
        try:
            shard = EdgeShard.load(str(self.root / name))
        except Exception as exc:  # the binding raises plain Exception
            lock.release()
            raise IndexUnavailable(
                f"cannot open Qdrant Edge shard {self.root / name}: {exc}. Qdrant Edge allows one "
                "process at a time; stop the other process or set QDRANT_URL."
            ) from exc
        self._shard_lock = lock
        config = self._config(self.root / name)
        self._vectors = self._vector_sizes(config)
        self._full_scan_kb = self._full_scan_thresholds(config)
        self._fused_type = self._fused_datatype(config)
        self._size = None
        if self.tuning.preload and not self._pinned:  # never a generation while it is built
            from .preload import preload_in_background

            self._preload_stop = threading.Event()
            self.preloading = preload_in_background(self.root / name, self._preload_stop)
        return shard

    @staticmethod
    def _config(shard_dir: Path) -> dict[str, Any]:
        """A generation's config (qdrant-edge keeps it beside the data; empty when unreadable),
        read once per open for :meth:`_vector_sizes`, :meth:`_full_scan_thresholds` and
        :meth:`_fused_datatype`."""
        try:
            config = json.loads((shard_dir / "edge_config.json").read_text())
        except (OSError, ValueError):
            return {}
        return config if isinstance(config, dict) else {}

    @staticmethod
    def _vector_sizes(config: dict[str, Any]) -> dict[str, int]:
        """The named vectors of a generation and their sizes."""
        try:
            return {name: int(params["size"]) for name, params in config["vectors"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return {}

    @staticmethod
    def _fused_datatype(config: dict[str, Any]) -> str | None:
        """How a generation stores its fused vector (``FUSED_DATATYPE`` when it was built; float32
        when its config does not say; ``None``: it has no fused vector, or no readable config)."""
        try:
            vectors = config["vectors"]
            return datatype_name(vectors[FUSED].get("datatype")) if FUSED in vectors else None
        except (KeyError, TypeError, AttributeError):
            return None

    @staticmethod
    def _full_scan_thresholds(config: dict[str, Any]) -> dict[str, int]:
        """The full-scan threshold each named vector of a generation was built with (its own
        HNSW config's, else the collection's), in KB of float32 (:func:`~.base.float32_kb`: a
        float16 fused vector is built with half the KB); none when the config cannot be read."""
        try:
            default = config["hnsw_config"]["full_scan_threshold"]
            return {name: float32_kb(int((params.get("hnsw_config") or {}).get("full_scan_threshold", default)),
                                     params.get("datatype"))
                    for name, params in config["vectors"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return {}

    def has_vector(self, name: str) -> bool:
        """Whether the generation this object reads has the named vector ``name``."""
        with self._lock:
            self._get()
            return name in self._vectors

    def _get(self) -> Any:
        with self._lock:
            live = self._live_dir()
            if live is None:
                raise IndexUnavailable(
                    f"no Qdrant Edge index at {self.root}; run `manage.py similarity_reindex --all`."
                )
            if self._shard is None or live != self._dir:
                self._release()
                self._shard = self._open(live)
                self._dir = live
            return self._shard

    def _release(self) -> None:
        self._preload_stop.set()
        if self._shard is not None:
            try:
                self._shard.flush()
                self._shard.close()
            finally:
                self._shard = None
                self._dir = None
                if self._shard_lock is not None:
                    self._shard_lock.release()
                    self._shard_lock = None

    def close(self) -> None:
        with self._lock:
            self._release()

    # -- protocol ---------------------------------------------------------------------------
    def ensure(self, dims: dict[str, int], payload_schema: dict[str, str]) -> None:
        self._bool_fields = {k for k, v in payload_schema.items() if v == "bool"}
        self.dims, self.payload_schema = dict(dims), dict(payload_schema)
        with self._lock:
            if self._live_dir() is None:
                name = f"{self.collection}-{_stamp()}"
                self._create(name, dims, payload_schema)
                self._write_pointer(name)
            else:
                shard = self._get()
                self._ensure_field_indexes(shard, self._schema(payload_schema))

    def _create(self, name: str, dims: dict[str, int], payload_schema: dict[str, str]) -> None:
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeOptimizersConfig,
            EdgeShard,
            EdgeVectorParams,
            HnswIndexConfig,
            ScalarQuantizationConfig,
            ScalarType,
            VectorStorageDatatype,
        )

        tuning = self.tuning
        quantization = (
            ScalarQuantizationConfig(type=ScalarType.Int8, quantile=0.99, always_ram=True)
            if tuning.quantization == "int8" else None
        )
        def hnsw(full_scan_kb: int) -> HnswIndexConfig:
            return HnswIndexConfig(m=tuning.hnsw_m, ef_construct=tuning.hnsw_ef_construct,
                                   full_scan_threshold=full_scan_kb)

        config = EdgeConfig(
            vectors={  # the fused vector holds normalised parts already: a dot product
                vec: EdgeVectorParams(size=size, distance=Distance.Dot if vec == FUSED else Distance.Cosine,
                                      on_disk=tuning.on_disk or None,
                                      hnsw_config=hnsw(engine_kb(tuning.full_scan_kb, tuning.fused_datatype))
                                      if vec == FUSED else None,
                                      datatype=VectorStorageDatatype.Float16
                                      if vec == FUSED and tuning.fused_datatype == "float16" else None)
                for vec, size in with_fused(dims).items()
            },
            hnsw_config=hnsw(tuning.indexing_threshold_kb),
            optimizers=EdgeOptimizersConfig(indexing_threshold=tuning.indexing_threshold_kb),
            quantization_config=quantization,
        )
        lock = ShardLock(self.root / name)
        lock.acquire(self.lock_timeout)
        try:
            shard = EdgeShard.create(str(self.root / name), config)
            self._ensure_field_indexes(shard, self._schema(payload_schema, with_fused(dims)))
            shard.flush()
            shard.close()
        finally:
            lock.release()

    def _schema(self, payload_schema: dict[str, str], vectors: dict[str, int] | None = None) -> dict[str, str]:
        """The payload indexes of a generation: the spec's, and the fused vector's flag."""
        has_fused = FUSED in (self._vectors if vectors is None else vectors)
        return {**payload_schema, PARTIAL: "integer"} if has_fused else dict(payload_schema)

    @staticmethod
    def _ensure_field_indexes(shard: Any, payload_schema: dict[str, str]) -> None:
        from qdrant_edge import PayloadSchemaType, UpdateOperation

        present = set(shard.info().payload_schema)
        for field_name, kind in payload_schema.items():
            if field_name not in present:
                schema = getattr(PayloadSchemaType, _SCHEMA_TYPES[kind])
                shard.update(UpdateOperation.create_field_index(field_name, schema))

    def upsert(self, points: list[PointData]) -> None:
        from qdrant_edge import Point, UpdateOperation

        if not points:
            return
        with self._lock:
            shard = self._get()
            stored = [(p.id, *stored_point(p.vectors, p.payload, self._vectors)) for p in points]
            shard.update(UpdateOperation.upsert_points([
                Point(id, {k: list(v) for k, v in vectors.items()}, _store(payload))
                for id, vectors, payload in stored
            ]))
            shard.flush()
            self._journaled(p.id for p in points)
        self._maybe_reoptimize(len(points))

    def delete(self, ids: list[str]) -> None:
        from qdrant_edge import UpdateOperation

        if not ids:
            return
        with self._lock:
            shard = self._get()
            shard.update(UpdateOperation.delete_points(list(ids)))
            shard.flush()
            self._journaled(ids)

    def set_payload(self, id: str, payload: dict[str, Any]) -> None:
        from qdrant_edge import UpdateOperation

        with self._lock:
            shard = self._get()
            flag = {key: value for record in shard.retrieve([id], with_payload=True, with_vector=False)
                    for key, value in (record.payload or {}).items() if key == PARTIAL}  # the index's own
            shard.update(UpdateOperation.overwrite_payload([id], {**_store(public_payload(payload)), **flag}))
            shard.flush()
            self._journaled([id])

    def retrieve(self, ids: list[str], *, with_vectors: bool = False) -> dict[str, PointData]:
        if not ids:
            return {}
        with self._lock:
            shard = self._get()
            records = shard.retrieve(list(ids), with_payload=True,
                                     with_vector=self._readable_vectors() if with_vectors else False)
        return {
            str(r.id): PointData(str(r.id), dict(r.vector or {}) if with_vectors else {}, self._load(r.payload))
            for r in records
        }

    def query(
        self, using: str, vector: list[float], *, limit: int, filter: SearchFilter | None = None
    ) -> list[Hit]:
        from qdrant_edge import Query, QueryRequest

        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(list(vector), using=using),
            with_payload=True,
            filter=to_edge_filter(filter) if filter else None,
            params=self.params_for(filter, [using]),
        )
        with self._lock:
            points = self._get().query(request)
        return [Hit(str(p.id), float(p.score), self._load(p.payload)) for p in points]

    def params_for(self, search_filter: SearchFilter | None, vectors: list[str], *, near: bool = False) -> Any:
        """The search settings for a search of ``vectors`` under ``search_filter``: every
        passing point scored when the filter selects few enough points (``EXACT_FILTER_KB``,
        estimated from the payload indexes: one cheap count; ``exact``, or with int8 the
        engine's scan of the int8 copy, :meth:`IndexSettings.scans_int8`), else the graph with
        ``HNSW_EF_FILTERED``. A filter relative to the query (``near``, :attr:`FusedQuery.near`: its
        own category) keeps its points around the query: never ``exact``, the graph with
        :meth:`IndexSettings.near_ef` for the generation's size (the engine's planner may still
        scan a filter under its full-scan threshold)."""
        from qdrant_edge import CountRequest

        if search_filter is None or not search_filter.selects:
            return self.search_params()
        if near and self.tuning.near_ef_points > 0:
            return self.search_params(ef=self.tuning.near_ef(self.points_estimate()))
        if self.tuning.exact_filter_kb > 0:
            with self._lock:
                shard = self._get()
                dims = sum(self._vectors.get(name, 0) for name in vectors)  # the per-modality request scans each
                built = built_full_scan_kb(self._full_scan_kb, vectors)
                points = int(shard.count(CountRequest(exact=False, filter=to_edge_filter(search_filter))))
            if dims and self.tuning.exact_for(points, dims):  # unknown sizes: the graph
                scan = self.tuning.scans_int8(points, dims, built)
                return self.search_params(filtered=True, exact=not scan)
        return self.search_params(filtered=True)

    def points_estimate(self) -> int:
        """The open generation's points, read again after :data:`SIZE_TTL` seconds (a list length
        is chosen from it; a minute's growth does not matter)."""
        with self._lock:
            shard = self._get()
            if self._size is None or time.monotonic() - self._size[0] > SIZE_TTL:
                self._size = (time.monotonic(), int(shard.info().points_count))
            return self._size[1]

    def search_params(self, *, filtered: bool = False, exact: bool = False, ef: int | None = None) -> Any:
        """HNSW search settings (``INDEX`` settings): ``hnsw_ef`` (``hnsw_ef_filtered`` with a
        selecting payload filter; ``ef`` when given), int8 rescoring, ACORN; ``exact``: every
        passing point scored."""
        from qdrant_edge import AcornSearchParams, QuantizationSearchParams, SearchParams

        tuning = self.tuning
        return SearchParams(
            exact=exact,
            hnsw_ef=ef if ef is not None else tuning.search_ef(filtered=filtered),
            quantization=QuantizationSearchParams(rescore=True) if tuning.quantization else None,
            acorn=AcornSearchParams(enable=True) if tuning.acorn else None,
        )

    def query_fused(self, request: FusedQuery) -> list[FusedHit]:
        """One request; see :func:`.edge_fused.query_fused` (qdrant-edge has no grouping API)."""
        return query_fused(self, request)

    def run_query(self, request: Any) -> list[Any]:
        with self._lock:
            return list(self._get().query(request))

    def run_query_batch(self, request: Any) -> list[list[Any]]:
        with self._lock:
            return [list(points) for points in self._get().query_batch(request)]

    def stored_payload(self, payload: dict[str, Any] | None) -> dict[str, Any]:
        return self._load(payload)

    def iter_points(self, *, batch_size: int = 256) -> Iterator[PointData]:
        from qdrant_edge import ScrollRequest

        offset = None
        while True:
            with self._lock:
                records, offset = self._get().scroll(
                    ScrollRequest(offset=offset, limit=batch_size, with_payload=True, with_vector=False)
                )
            for r in records:
                yield PointData(str(r.id), {}, self._load(r.payload))
            if offset is None or not records:
                return

    def optimize(self) -> bool:
        """Build the HNSW graphs, never in this process (qdrant-edge's optimise holds the GIL: see
        :mod:`.edge_optimize`). A rebuild's generation (nobody reads it yet) is closed here and
        optimised by a child process; the live one is re-optimised as a copy, then switched."""
        if self._pinned:
            self.close()
            return bool(optimize_in_child(self.root / self._pinned, lock_timeout=self.lock_timeout)["changed"])
        return reoptimize_live(self)

    # -- keeping the live generation indexed ------------------------------------------------
    def _journaled(self, ids: Any) -> None:
        if self._journal is not None:
            self._journal.update(str(i) for i in ids)

    def begin_compaction(self) -> bool:
        with self._lock:
            if self._compacting or self._pinned:
                return False
            self._compacting, self._journal = True, set()
            return True

    def end_journal(self) -> set[str]:
        with self._lock:
            written, self._journal = self._journal or set(), None
            return written

    def end_compaction(self) -> None:
        with self._lock:
            self._compacting, self._journal = False, None

    def scroll_with_vectors(self, *, batch_size: int = 256) -> Iterator[list[PointData]]:
        """Every point with its vectors, a page at a time (the lock is held for one page)."""
        from qdrant_edge import ScrollRequest

        offset = None
        while True:
            with self._lock:
                shard = self._get()
                records, offset = shard.scroll(ScrollRequest(
                    offset=offset, limit=batch_size, with_payload=True, with_vector=self._readable_vectors()))
            yield [PointData(str(r.id), dict(r.vector or {}), self._load(r.payload)) for r in records]
            if offset is None or not records:
                return

    def _readable_vectors(self) -> list[str] | bool:
        """The named vectors a caller reads back: all but :data:`FUSED` (derived from the others)."""
        return [name for name in self._vectors if name != FUSED] or True

    def unindexed_vectors(self) -> int:
        """Vectors not in an HNSW graph yet (searched by a full scan of their segments)."""
        from qdrant_edge import CountRequest, Filter, HasVectorCondition

        with self._lock:
            shard = self._get()
            present = sum(
                int(shard.count(CountRequest(exact=True, filter=Filter(must=[HasVectorCondition(name)]))))
                for name in (self._vectors or self.dims)
            )
            return max(0, present - int(shard.info().indexed_vectors_count))

    def _maybe_reoptimize(self, written: int) -> None:
        """After every ~quarter of ``optimize_after`` points written, count what is unindexed;
        past ``optimize_after``, re-optimise in the background (see :mod:`.edge_optimize`)."""
        threshold = self.tuning.optimize_after
        if self._pinned or threshold <= 0 or not self.dims:
            return
        self._written_since_check += written
        if self._written_since_check < max(1, threshold // 4) or self._compacting:
            return
        self._written_since_check = 0
        try:  # the points are written: a failed size check must not fail the write
            unindexed = self.unindexed_vectors()
            write_stats(self, unindexed=unindexed)
        except Exception:  # noqa: BLE001
            logger.exception("could not check how much of %s is unindexed", self.collection)
            return
        if unindexed >= threshold:
            start_background_reoptimize(self)

    def fused_datatype(self) -> str | None:
        """How the open generation stores the fused vector ("float16", "float32"; ``None``:
        it has none)."""
        with self._lock:
            self._get()
            return self._fused_type

    def indexed_vectors(self) -> int:
        with self._lock:
            return int(self._get().info().indexed_vectors_count)

    def count(self) -> int:
        from qdrant_edge import CountRequest

        with self._lock:
            return int(self._get().count(CountRequest(exact=True)))

    def start_rebuild(self, dims: dict[str, int], payload_schema: dict[str, str]) -> QdrantEdgeIndex:
        name = f"{self.collection}-{_stamp()}"
        self._create(name, dims, payload_schema)
        new = QdrantEdgeIndex(path=str(self.root), collection=self.collection, lock_timeout=self.lock_timeout,
                              tuning=self.tuning)
        new._pinned = name
        new._bool_fields = {k for k, v in payload_schema.items() if v == "bool"}
        new.dims, new.payload_schema = dict(dims), dict(payload_schema)
        return new

    @property
    def generation(self) -> str:
        return self._pinned or self._live_dir() or ""

    def resume_rebuild(self, generation: str) -> QdrantEdgeIndex:
        if not (self.root / generation).is_dir():
            raise IndexUnavailable(f"rebuild generation {generation} is gone; start afresh")
        new = QdrantEdgeIndex(path=str(self.root), collection=self.collection, lock_timeout=self.lock_timeout,
                              tuning=self.tuning)
        new._pinned = generation
        new._bool_fields = set(self._bool_fields)
        new.dims, new.payload_schema = dict(self.dims), dict(self.payload_schema)
        return new

    def abandon_rebuild(self, generation: str) -> None:
        if generation and generation != self._live_dir():
            self._drop(self.root / generation)

    @staticmethod
    def _drop(shard_dir: Path) -> None:
        lock = ShardLock(shard_dir)
        if not lock.try_acquire():
            logger.info("keeping %s: another process has it open", shard_dir)
            return
        try:
            shutil.rmtree(shard_dir, ignore_errors=True)
            lock.unlink()
        finally:
            lock.release()

    def finish_rebuild(self, new: QdrantEdgeIndex, *, expect: str | None = None, sweep: bool = True) -> bool:
        """Make ``new`` live. The pointer is checked and replaced under an advisory lock of its
        own, so two switches in two processes (a rebuild command, the web process's background
        re-optimise) never interleave; with ``expect``, only if the live generation is still
        that one (False otherwise: the caller abandons ``new``). ``sweep``: drop the older
        generations nobody holds (a re-optimise passes False: an unlocked folder may be a
        rebuild's generation between its optimise and its switch)."""
        name = new._pinned
        assert name, "finish_rebuild takes the index returned by start_rebuild"
        try:  # measured on the new generation, which the caller holds (never the live one: a
            write_stats(new)  # rebuild command may run beside the process that holds it)
        except Exception:  # noqa: BLE001 - the size record is advice only
            logger.exception("could not record the size of %s", name)
        new.close()
        pointer_lock = ShardLock(self.pointer)
        pointer_lock.acquire(self.lock_timeout)
        try:
            with self._lock:
                previous = self._live_dir()
                if expect is not None and previous != expect:
                    return False
                self._write_pointer(name)
                self._release()
        finally:
            pointer_lock.release()
        if sweep:
            # Keep the generation just replaced (a reader may still have it open); drop older
            # ones that no process holds.
            keep = {name, previous}
            for child in self.root.iterdir():
                if child.is_dir() and child.name.startswith(f"{self.collection}-") and child.name not in keep:
                    self._drop(child)
        logger.info("Qdrant Edge index switched to %s", name)
        return True
