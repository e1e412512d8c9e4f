"""Qdrant server through ``qdrant-client`` (``QDRANT_URL``); its local mode serves tests.

The live collection is reached through an alias named ``collection``; each generation is a
collection ``<collection>_<stamp>``. A rebuild fills a new generation and then moves the alias
in one ``update_collection_aliases`` call, which Qdrant applies atomically.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

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
    active_vectors,
    built_full_scan_kb,
    engine_kb,
    float32_kb,
    fused_query_vector,
    hit_scores,
    public_payload,
    rescored,
    stored_point,
    with_fused,
    with_margin,
)
from .filter_sizes import FilterSizes
from .qdrant_fused import NO_SCORE, fused_arguments, fused_vector_arguments

logger = logging.getLogger(__name__)
T = TypeVar("T")


@contextmanager
def _unavailable_on_transport_errors(action: str) -> Iterator[None]:
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    try:
        yield
    except (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError) as exc:
        raise IndexUnavailable(f"Qdrant is unreachable while trying to {action}: {exc}") from exc
    except UnexpectedResponse as exc:  # 5xx, and 4xx too: a missing collection (a fresh deploy,
        # a wrong name, the moment of an alias switch) must not be a 500 on every page
        raise IndexUnavailable(f"Qdrant answered {exc.status_code} while trying to {action}: {exc}") from exc
    except ValueError as exc:  # qdrant-client's local mode: "Collection ... not found"
        if "not found" not in str(exc):
            raise
        raise IndexUnavailable(f"Qdrant cannot {action}: {exc}") from exc


class QdrantServerIndex:
    def __init__(
        self, *, url: str = "", api_key: str = "", path: str = "", collection: str = "products",
        timeout: float = 5.0, client: Any = None, tuning: Any = None, **_: Any,
    ) -> None:
        self.tuning = tuning or IndexSettings()
        self.url = url
        self.api_key = api_key
        self.location_path = path
        self.alias = collection
        self.timeout = timeout
        self._client = client
        self._target: str | None = None  # a generation being rebuilt, addressed by its name
        self._sizes: dict[str, tuple[float, dict[str, int]]] = {}  # (when read, named vectors) per alias
        #: (when read, full-scan threshold per named vector, points) per alias
        self._facts: dict[str, tuple[float, dict[str, int], int | None]] = {}
        self._filter_sizes = FilterSizes()  # estimated points per filter, for the exact-or-graph choice

    @property
    def client(self) -> Any:
        if self._client is None:
            from qdrant_client import QdrantClient

            if self.url == ":memory:":
                self._client = QdrantClient(location=":memory:")
            elif self.url:
                self._client = QdrantClient(
                    url=self.url, api_key=self.api_key or None, timeout=int(self.timeout)
                )
            else:
                self._client = QdrantClient(path=self.location_path)
        return self._client

    @property
    def name(self) -> str:
        return self._target or self.alias

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        with _unavailable_on_transport_errors(action):
            return fn()

    # -- protocol ---------------------------------------------------------------------------
    def ensure(self, dims: dict[str, int], payload_schema: dict[str, str]) -> None:
        def run() -> None:
            aliases = {a.alias_name for a in self.client.get_aliases().aliases}
            if self.alias in aliases or self.client.collection_exists(self.alias):
                flag = {PARTIAL: "integer"} if FUSED in self._vector_sizes() else {}
                self._ensure_field_indexes(self.name, {**payload_schema, **flag})
                return
            generation = self._create(dims, payload_schema)
            self._point_alias(generation, previous=None)

        self._call("create the collection", run)

    def _create(self, dims: dict[str, int], payload_schema: dict[str, str]) -> str:
        from qdrant_client import models

        generation = f"{self.alias}_{time.strftime('%Y%m%d%H%M%S')}_{uuid.uuid4().hex[:6]}"
        tuning = self.tuning
        quantization = (
            models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, quantile=0.99, always_ram=True))
            if tuning.quantization == "int8" else None
        )
        self.client.create_collection(
            generation,
            vectors_config={  # the fused vector holds normalised parts already: a dot product
                vec: models.VectorParams(
                    size=size, on_disk=tuning.on_disk or None,
                    distance=models.Distance.DOT if vec == FUSED else models.Distance.COSINE,
                    hnsw_config=(models.HnswConfigDiff(
                        full_scan_threshold=engine_kb(tuning.full_scan_kb, tuning.fused_datatype))
                                 if vec == FUSED else None),
                    datatype=(models.Datatype.FLOAT16
                              if vec == FUSED and tuning.fused_datatype == "float16" else None),
                )
                for vec, size in with_fused(dims).items()
            },
            hnsw_config=models.HnswConfigDiff(m=tuning.hnsw_m, ef_construct=tuning.hnsw_ef_construct,
                                              full_scan_threshold=tuning.indexing_threshold_kb),
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=tuning.indexing_threshold_kb),
            quantization_config=quantization,
        )
        self._ensure_field_indexes(generation, {**payload_schema, PARTIAL: "integer"})
        return generation

    def _ensure_field_indexes(self, collection: str, payload_schema: dict[str, str]) -> None:
        from qdrant_client import models

        kinds = {
            "keyword": models.PayloadSchemaType.KEYWORD,
            "integer": models.PayloadSchemaType.INTEGER,
            "float": models.PayloadSchemaType.FLOAT,
            "bool": models.PayloadSchemaType.BOOL,
        }
        info = self.client.get_collection(collection)
        present = set((info.payload_schema or {}).keys())
        for field_name, kind in payload_schema.items():
            if field_name not in present:
                self.client.create_payload_index(collection, field_name, field_schema=kinds[kind])

    def _point_alias(self, generation: str, previous: str | None) -> None:
        from qdrant_client import models

        operations: list[Any] = []
        if previous is not None:
            operations.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.alias))
            )
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=generation, alias_name=self.alias)
            )
        )
        self.client.update_collection_aliases(change_aliases_operations=operations)

    def _alias_target(self) -> str | None:
        for alias in self.client.get_aliases().aliases:
            if alias.alias_name == self.alias:
                return str(alias.collection_name)
        return None

    def upsert(self, points: list[PointData]) -> None:
        from qdrant_client import models

        if not points:
            return
        def write(sizes: dict[str, int]) -> None:
            structs = [models.PointStruct(id=p.id, vector=vectors, payload=payload)
                       for p in points for vectors, payload in [stored_point(p.vectors, p.payload, sizes)]]
            self._call("upsert points", lambda: self.client.upsert(self.name, points=structs, wait=True))

        sizes = self._vector_sizes()
        write(sizes)
        if FUSED not in sizes and self._target is None:
            # An old collection, until its first rebuild with the fused vector: the alias may have
            # moved to that rebuild while this wrote through it, and a point written without its
            # fused vector would never be found. Look again (the upgrade window only) and rewrite.
            self._sizes.pop(self.alias, None)
            fresh = self._vector_sizes()
            if FUSED in fresh:
                write(fresh)

    def _vector_sizes(self) -> dict[str, int]:
        """The named vectors of the collection this object addresses. Cached per alias (or
        rebuild target): an answer with :data:`FUSED` for good (every later generation is created
        with it), one without it for a minute (an old collection until its first rebuild)."""
        key = self._target or self.alias
        cached = self._sizes.get(key)
        if cached is not None and (FUSED in cached[1] or time.monotonic() - cached[0] < 60):
            return cached[1]
        collection = self._target or self._call("read the alias", self._alias_target) or self.alias
        info = self._call("read the collection", lambda: self.client.get_collection(collection))
        vectors = info.config.params.vectors
        sizes = {name: int(p.size) for name, p in vectors.items()} if isinstance(vectors, dict) else {}
        self._sizes[key] = (time.monotonic(), sizes)
        return sizes

    def _collection_facts(self) -> tuple[dict[str, int], int | None]:
        """The full-scan threshold (KB of float32, :func:`~.base.float32_kb`) each named vector of the
        collection this object addresses was built with (its own HNSW config's, else the
        collection's), and its points. Read again
        after a minute: another process's rebuild may have moved the alias to a generation
        built with other settings, and the points grow (``None`` when the server does not say)."""
        key = self._target or self.alias
        cached = self._facts.get(key)
        if cached is not None and time.monotonic() - cached[0] < 60:
            return cached[1], cached[2]
        collection = self._target or self._call("read the alias", self._alias_target) or self.alias
        info = self._call("read the collection", lambda: self.client.get_collection(collection))
        default = info.config.hnsw_config.full_scan_threshold
        vectors = info.config.params.vectors if isinstance(info.config.params.vectors, dict) else {}
        thresholds = {name: float32_kb(int(getattr(p.hnsw_config, "full_scan_threshold", None) or default),
                                       getattr(p, "datatype", None))
                      for name, p in vectors.items()}
        points = None if info.points_count is None else int(info.points_count)
        self._facts[key] = (time.monotonic(), thresholds, points)
        return thresholds, points

    def has_vector(self, name: str) -> bool:
        return name in self._vector_sizes()

    def delete(self, ids: list[str]) -> None:
        from qdrant_client import models

        if not ids:
            return
        selector = models.PointIdsList(points=list(ids))
        self._call("delete points", lambda: self.client.delete(self.name, points_selector=selector, wait=True))

    def set_payload(self, id: str, payload: dict[str, Any]) -> None:
        """Replace the point's public payload; the index's own flag is never written here, so an
        upsert by another process between the read and the write cannot be undone by a stale copy
        of it (one request: set the new keys, delete the public keys the payload no longer has).
        Not a strict replace under concurrency: a key another writer adds between the read and
        the request stays."""
        from qdrant_client import models

        def run() -> None:
            # a None value is an absent key here (Qdrant's payload merge drops it anyway)
            new = {key: value for key, value in public_payload(payload).items() if value is not None}
            stale = sorted({_json_path(key)
                            for record in self.client.retrieve(self.name, ids=[id], with_payload=True)
                            for key in (record.payload or {}) if key not in new and key != PARTIAL})
            operations: list[Any] = [models.SetPayloadOperation(set_payload=models.SetPayload(payload=new,
                                                                                            points=[id]))]
            if stale:
                operations.append(models.DeletePayloadOperation(
                    delete_payload=models.DeletePayload(keys=stale, points=[id])))
            self.client.batch_update_points(self.name, operations, wait=True)

        self._call("set a payload", run)

    def retrieve(self, ids: list[str], *, with_vectors: bool = False) -> dict[str, PointData]:
        if not ids:
            return {}
        records = self._call(
            "retrieve points",
            lambda: self.client.retrieve(self.name, ids=list(ids), with_payload=True, with_vectors=(
                [name for name in self._vector_sizes() if name != FUSED] or True) if with_vectors else False),
        )
        return {
            str(r.id): PointData(
                str(r.id), dict(r.vector or {}) if with_vectors else {}, public_payload(r.payload)
            )
            for r in records
        }

    def query(
        self, using: str, vector: list[float], *, limit: int, filter: SearchFilter | None = None
    ) -> list[Hit]:
        response = self._call(
            "query",
            lambda: self.client.query_points(
                self.name, query=list(vector), using=using, limit=limit,
                query_filter=to_client_filter(filter) if filter else None, with_payload=True,
                search_params=self._params_for(filter, [using]),
            ),
        )
        return [Hit(str(p.id), float(p.score), public_payload(p.payload)) for p in response.points]

    def query_fused(self, request: FusedQuery) -> list[FusedHit]:
        """One request (see :mod:`.qdrant_fused`); one per group through ``query_points_groups``;
        on the fused vector a few rows more than ``limit``, cut after the exact rescoring
        (:func:`~.base.with_margin`)."""
        if not any(w > 0 for w in request.weights.values()):
            return []
        query = fused_query_vector(request) if self.has_vector(FUSED) else None
        params = self._params_for(request.filter, [FUSED] if query is not None else
                                  [name for name, _v, _w in active_vectors(request)], near=request.near)
        arguments = (
            fused_vector_arguments(request, query, search_filter=request.filter, params=params,
                                   to_filter=to_client_filter)
            if query is not None else
            fused_arguments(request, search_filter=request.filter, params=params, to_filter=to_client_filter)
        )
        # the margin undoes the stored fused vector's rounding; the per-modality request ranks float32
        rows = with_margin(request.limit) if query is not None else request.limit
        if request.group_by:
            group_by = request.group_by
            response = self._call("query groups", lambda: self.client.query_points_groups(
                self.name, group_by=group_by, group_size=1, limit=rows, **arguments))
            points = [group.hits[0] for group in response.groups if group.hits]
        else:
            response = self._call("query", lambda: self.client.query_points(
                self.name, limit=rows, **arguments))
            points = response.points
        return rescored(request, [
            FusedHit(str(p.id), float(p.score), hit_scores(request, p.vector), public_payload(p.payload))
            for p in points
            if p.score > NO_SCORE
        ])[:request.limit]

    def iter_points(self, *, batch_size: int = 256) -> Iterator[PointData]:
        offset: Any = None
        while True:
            page: tuple[list[Any], Any] = self._call(
                "scroll points",
                functools.partial(self.client.scroll, self.name, limit=batch_size, offset=offset,
                                  with_payload=True, with_vectors=False),
            )
            records, offset = page
            for r in records:
                yield PointData(str(r.id), {}, public_payload(r.payload))
            if offset is None or not records:
                return

    def _params_for(self, search_filter: SearchFilter | None, vectors: list[str], *, near: bool = False) -> Any:
        """As :meth:`QdrantEdgeIndex.params_for`: every passing point scored for a filter that
        selects few enough points (an estimated count: one cheap request, reused for a minute by
        filters with the same conditions, :mod:`.filter_sizes`; ``exact``, or with int8 the
        server's scan of the int8 copy), else the graph with ``HNSW_EF_FILTERED``; ``near``: never
        ``exact``, :meth:`IndexSettings.near_ef` for the collection's points."""
        if search_filter is None or not search_filter.selects:
            return self._search_params()
        if near and self.tuning.near_ef_points > 0:
            return self._search_params(ef=self.tuning.near_ef(self._collection_facts()[1]))
        if self.tuning.exact_filter_kb > 0:
            sizes = self._vector_sizes()
            dims = sum(sizes.get(name, 0) for name in vectors)  # the per-modality request scans each
            points = self._filter_sizes.size(search_filter, self._count_estimate)
            if dims and self.tuning.exact_for(int(points), dims):  # unknown sizes: the graph
                built = built_full_scan_kb(self._collection_facts()[0], vectors) if self.tuning.quantization else None
                scan = self.tuning.scans_int8(int(points), dims, built)
                return self._search_params(filtered=True, exact=not scan)
        return self._search_params(filtered=True)

    def _count_estimate(self, search_filter: SearchFilter) -> int:
        return int(self._call("count points", lambda: self.client.count(
            self.name, count_filter=to_client_filter(search_filter), exact=False)).count)

    def _search_params(self, *, filtered: bool = False, exact: bool = False, ef: int | None = None) -> Any:
        from qdrant_client import models

        tuning = self.tuning
        return models.SearchParams(
            exact=exact,
            hnsw_ef=ef if ef is not None else tuning.search_ef(filtered=filtered),
            quantization=models.QuantizationSearchParams(rescore=True) if tuning.quantization else None,
            acorn=models.AcornSearchParams(enable=True) if tuning.acorn else None,
        )

    def optimize(self, *, wait: float = 600.0) -> bool:
        """The server optimises in the background; wait until the collection is green (its
        segments indexed), so that a rebuilt generation goes live indexed."""
        from qdrant_client import models

        deadline = time.monotonic() + wait
        while True:
            info = self._call("read the collection", lambda: self.client.get_collection(self.name))
            if info.status == models.CollectionStatus.GREEN:
                return True
            if time.monotonic() >= deadline:
                logger.warning("collection %s still optimising after %.0f s", self.name, wait)
                return False
            time.sleep(0.5)

    def count(self) -> int:
        return int(self._call("count points", lambda: self.client.count(self.name, exact=True).count))

    def start_rebuild(self, dims: dict[str, int], payload_schema: dict[str, str]) -> QdrantServerIndex:
        generation = self._call("create a collection", lambda: self._create(dims, payload_schema))
        return self._generation_index(generation)

    @property
    def generation(self) -> str:
        return self._target or self.alias

    def _generation_index(self, generation: str) -> QdrantServerIndex:
        new = QdrantServerIndex(
            url=self.url, api_key=self.api_key, path=self.location_path, collection=self.alias,
            timeout=self.timeout, client=self.client, tuning=self.tuning,
        )
        new._target = generation
        return new

    def resume_rebuild(self, generation: str) -> QdrantServerIndex:
        if not self._call("look up a collection", lambda: self.client.collection_exists(generation)):
            raise IndexUnavailable(f"rebuild collection {generation} is gone; start afresh")
        return self._generation_index(generation)

    def abandon_rebuild(self, generation: str) -> None:
        def run() -> None:
            if generation != self._alias_target() and self.client.collection_exists(generation):
                self.client.delete_collection(generation)

        self._call("delete a collection", run)

    def finish_rebuild(self, new: QdrantServerIndex) -> None:
        generation = new._target
        assert generation, "finish_rebuild takes the index returned by start_rebuild"

        def run() -> None:
            previous = self._alias_target()
            if previous is None and self.client.collection_exists(self.alias):
                # A plain collection squats the alias name (created by hand): replace it.
                self.client.delete_collection(self.alias)
            self._point_alias(generation, previous=previous)
            if previous and previous != generation:
                self.client.delete_collection(previous)

        self._call("switch the alias", run)
        self._filter_sizes.clear()  # the sizes were the old generation's
        self._sizes.pop(self.alias, None)
        self._facts.pop(self.alias, None)
        logger.info("Qdrant alias %s now points at %s", self.alias, generation)

    def close(self) -> None:
        if self._client is not None and self._target is None:
            self._client.close()
            self._client = None


def _json_path(key: str) -> str:
    """A top-level payload key as Qdrant's key path (a key that is not a plain name is quoted, or
    ``a.b`` would name a nested field)."""
    return key if key.isidentifier() else '"' + key.replace('"', '\\"') + '"'


def to_client_filter(spec: SearchFilter, *, must: list[Any] | None = None, should: list[Any] | None = None,
                     must_not: list[Any] | None = None) -> Any:
    """``spec`` as a qdrant-client ``Filter``, with extra ``must``/``should``/``must_not`` conditions."""
    from qdrant_client import models

    must = [*(must or []), *(models.FieldCondition(key=k, match=models.MatchValue(value=v))
                             for k, v in spec.match.items())]
    must += [
        models.FieldCondition(key=k, match=models.MatchAny(any=list(v))) for k, v in spec.match_any.items()
    ]
    must += [
        models.FieldCondition(key=k, range=models.Range(gte=lo, lte=hi)) for k, (lo, hi) in spec.ranges.items()
    ]
    if spec.ids is not None:
        must.append(models.HasIdCondition(has_id=sorted(spec.ids)))
    must_not = [*(must_not or []), *(models.FieldCondition(key=k, match=models.MatchValue(value=v))
                                     for k, v in spec.exclude.items())]
    must_not += [
        models.FieldCondition(key=k, match=models.MatchAny(any=list(v))) for k, v in spec.exclude_any.items()
    ]
    if spec.exclude_ids:
        must_not.append(models.HasIdCondition(has_id=sorted(spec.exclude_ids)))
    return models.Filter(must=must or None, should=should or None, must_not=must_not or None)
