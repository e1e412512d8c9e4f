"""One contract suite run against every VectorIndex: Qdrant Edge on disk and the qdrant-client
code path (its local mode, on disk and in memory)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import numpy as np
import pytest

from similarity.exceptions import IndexUnavailable
from similarity.index.base import FusedQuery, PointData, SearchFilter, built_full_scan_kb
from similarity.index.edge import QdrantEdgeIndex
from similarity.index.qdrant import QdrantServerIndex

DIMS = {"image": 8, "text": 4}
SCHEMA = {"pk": "integer", "group": "integer", "category_ids": "integer", "brand": "keyword",
          "in_stock": "bool", "price": "float"}


def pid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, str(n)))


@pytest.fixture(params=["edge", "client-disk", "client-memory"])
def index(request, tmp_path):
    if request.param == "edge":
        idx = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="products", lock_timeout=0.5)
    elif request.param == "client-disk":
        idx = QdrantServerIndex(path=str(tmp_path / "qdrant"), collection="products")
    else:
        idx = QdrantServerIndex(url=":memory:", collection="products")
    idx.ensure(DIMS, SCHEMA)
    yield idx
    idx.close()


def vec(seed: int, dim: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=dim)
    return (v / np.linalg.norm(v)).tolist()


def point(n: int, *, image: bool = True, **payload) -> PointData:
    vectors = {"text": vec(n, 4)}
    if image:
        vectors["image"] = vec(n + 1000, 8)
    base = {"pk": n, "group": n, "category_ids": [1, 10 + n % 3], "brand": f"b{n % 2}",
            "in_stock": n % 2 == 0, "price": float(n)}
    return PointData(pid(n), vectors, {**base, **payload})


def test_ensure_is_idempotent(index):
    index.ensure(DIMS, SCHEMA)
    assert index.count() == 0


def test_upsert_retrieve_and_missing_vector(index):
    index.upsert([point(1), point(2, image=False)])
    got = index.retrieve([pid(1), pid(2), pid(99)], with_vectors=True)
    assert set(got) == {pid(1), pid(2)}
    assert set(got[pid(1)].vectors) == {"image", "text"}
    assert set(got[pid(2)].vectors) == {"text"}, "a point may lack a named vector"
    np.testing.assert_allclose(got[pid(1)].vectors["text"], vec(1, 4), atol=1e-6)
    assert got[pid(1)].payload["brand"] == "b1"
    assert got[pid(2)].payload["in_stock"] is True


def test_upsert_is_idempotent(index):
    index.upsert([point(1)])
    index.upsert([point(1, brand="new")])
    assert index.count() == 1
    assert index.retrieve([pid(1)])[pid(1)].payload["brand"] == "new"


def test_iter_points_pages_through_every_point(index):
    index.upsert([point(n) for n in range(1, 8)])
    index.delete([point(3).id])
    seen = list(index.iter_points(batch_size=2))
    assert sorted(p.id for p in seen) == sorted(point(n).id for n in (1, 2, 4, 5, 6, 7))
    assert all(p.payload["pk"] == point(int(p.payload["pk"])).payload["pk"] for p in seen)
    assert list(index.start_rebuild(DIMS, SCHEMA).iter_points()) == []


def test_query_orders_by_cosine(index):
    index.upsert([point(n) for n in range(20)])
    hits = index.query("text", vec(3, 4), limit=5)
    assert hits[0].id == pid(3)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_query_skips_points_without_that_vector(index):
    index.upsert([point(1), point(2, image=False)])
    assert {h.id for h in index.query("image", vec(1001, 8), limit=10)} == {pid(1)}


def test_filters(index):
    index.upsert([point(n) for n in range(30)])
    flt = SearchFilter(match={"category_ids": 11, "in_stock": True}, exclude={"brand": "b1"},
                       ranges={"price": (0.0, 20.0)}, exclude_ids=frozenset({pid(4)}))
    hits = index.query("text", vec(0, 4), limit=30, filter=flt)
    pks = sorted(h.payload["pk"] for h in hits)
    expected = sorted(n for n in range(30) if n % 3 == 1 and n % 2 == 0 and n <= 20 and n != 4)
    assert pks == expected
    any_hits = index.query("text", vec(0, 4), limit=30, filter=SearchFilter(match_any={"pk": [1, 2]}))
    assert sorted(h.payload["pk"] for h in any_hits) == [1, 2]
    only = index.query("image", vec(1000, 8), limit=30, filter=SearchFilter(ids=frozenset({pid(3), pid(7)})))
    assert sorted(h.payload["pk"] for h in only) == [3, 7]


def test_delete_and_set_payload(index):
    index.upsert([point(1), point(2)])
    index.delete([pid(1), pid(404)])
    assert index.count() == 1
    index.set_payload(pid(2), {"pk": 2, "in_stock": False, "brand": "z"})
    hits = index.query("text", vec(2, 4), limit=5, filter=SearchFilter(match={"brand": "z"}))
    assert [h.id for h in hits] == [pid(2)]
    assert index.retrieve([pid(2)])[pid(2)].payload == {"pk": 2, "in_stock": False, "brand": "z"}, "replaced"


@pytest.mark.parametrize("url", [":memory:", "disk"])
def test_server_set_payload_never_writes_back_a_stale_flag(url, tmp_path):
    """Another process upserts the point (now with an image) between set_payload's read and its
    write: the "no image" flag it read must not come back (it used to be written with the payload)."""
    from similarity.index.base import PARTIAL

    idx = (QdrantServerIndex(url=url, collection="products") if url == ":memory:"
           else QdrantServerIndex(path=str(tmp_path / "qdrant"), collection="products"))
    idx.ensure(DIMS, SCHEMA)
    idx.upsert([point(1), point(2, image=False)])
    read = idx.client.retrieve

    def read_then_other_writer(*args, **kwargs):
        found = read(*args, **kwargs)
        idx.upsert([point(2)])  # the other process: the product got its photo
        return found

    idx.client.retrieve = read_then_other_writer  # type: ignore[method-assign]
    idx.set_payload(pid(2), {"pk": 2, "group": 2, "brand": "replaced"})
    idx.client.retrieve = read  # type: ignore[method-assign]
    flagged = idx.query("text", vec(2, 4), limit=10, filter=SearchFilter(match={PARTIAL: 1}))
    assert flagged == [], "the flag read before the other write was written back"
    assert idx.retrieve([pid(2)])[pid(2)].payload["brand"] == "replaced"
    # keys that are not plain names are removed as keys, not read as nested paths
    idx.set_payload(pid(1), {"pk": 1, "size.eu": "42", "colour name": "red", "note": "x"})
    idx.set_payload(pid(1), {"pk": 1, "note": None})
    assert idx.retrieve([pid(1)])[pid(1)].payload == {"pk": 1}, "a None value is an absent key"
    idx.close()


def test_rebuild_switches_atomically(index):
    index.upsert([point(1)])
    new = index.start_rebuild(DIMS, SCHEMA)
    new.upsert([point(2), point(3)])
    assert index.count() == 1, "the live generation keeps answering during a rebuild"
    assert {h.id for h in index.query("text", vec(1, 4), limit=10)} == {pid(1)}
    index.finish_rebuild(new)
    assert index.count() == 2
    assert pid(1) not in index.retrieve([pid(1)])


def test_resume_and_abandon_rebuild(index):
    new = index.start_rebuild(DIMS, SCHEMA)
    new.upsert([point(5)])
    generation = new.generation
    new.close() if isinstance(new, QdrantEdgeIndex) else None
    resumed = index.resume_rebuild(generation)
    resumed.upsert([point(6)])
    assert resumed.count() == 2
    resumed.close()  # a shard someone holds open is never deleted underneath them
    index.abandon_rebuild(generation)
    with pytest.raises(IndexUnavailable):
        index.resume_rebuild(generation)


def test_edge_second_process_gets_a_clear_error(tmp_path):
    """Qdrant Edge lets one process (here: one open shard) hold the WAL; others wait, then fail."""
    first = QdrantEdgeIndex(path=str(tmp_path / "e"), lock_timeout=0.2)
    first.ensure(DIMS, SCHEMA)
    first.count()
    second = QdrantEdgeIndex(path=str(tmp_path / "e"), lock_timeout=0.2)
    with pytest.raises(IndexUnavailable, match="open in another process"):
        second.count()
    first.close()
    assert second.count() == 0


def test_edge_without_an_index_says_how_to_make_one(tmp_path):
    with pytest.raises(IndexUnavailable, match="similarity_reindex --all"):
        QdrantEdgeIndex(path=str(tmp_path / "none")).count()


def test_unreachable_qdrant_server_is_retryable():
    down = QdrantServerIndex(url="http://127.0.0.1:9", collection="products", timeout=1)
    with pytest.raises(IndexUnavailable, match="unreachable"):
        down.query("text", vec(0, 4), limit=1)


@pytest.mark.parametrize("backend", ["edge", "client-memory"])
def test_hnsw_and_int8_settings_build_an_index_that_answers_like_exact_search(backend, tmp_path):
    """With a tiny indexing threshold, optimise builds HNSW graphs (int8 quantised, rescored);
    the top results equal an exact scan's, with a filter too (ACORN on)."""
    from similarity.conf import IndexSettings

    tuning = IndexSettings(indexing_threshold_kb=1, quantization="int8", hnsw_ef=64, acorn=True)
    if backend == "edge":
        idx = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="tuned", tuning=tuning)
    else:
        idx = QdrantServerIndex(url=":memory:", collection="tuned", tuning=tuning)
    idx.ensure(DIMS, SCHEMA)
    idx.upsert([point(n) for n in range(1, 301)])
    assert idx.optimize()
    if backend == "edge":
        assert idx.indexed_vectors() == 900, "image, text and fused vectors of every point are in a graph"
    query = vec(7, 4)
    got = [h.id for h in idx.query("text", query, limit=10)]
    matrix = np.array([vec(n, 4) for n in range(1, 301)])
    exact = [pid(int(n) + 1) for n in np.argsort(-(matrix @ np.array(query)))[:10]]
    assert len(set(got) & set(exact)) >= 9
    # a filter that keeps a third of the points, searched with ACORN
    got = [h.id for h in idx.query("text", query, limit=10, filter=SearchFilter(match={"category_ids": 11}))]
    kept = [n for n in range(1, 301) if n % 3 == 1]
    exact = [pid(kept[int(i)]) for i in np.argsort(-(matrix[[n - 1 for n in kept]] @ np.array(query)))[:10]]
    assert len(set(got) & set(exact)) >= 9
    idx.close()


def test_each_part_of_the_fused_search_asks_for_fetch_when_the_chosen_list_is_shorter(tmp_path):
    """Edge's fused search asks each part for ``rows`` only when the list the search walks
    (whichever ``params_for`` chose: unfiltered, filtered, or the own category's ``near_ef``)
    holds ``fetch``; a near search in a small index walks ``HNSW_EF``, not the filtered list."""
    from similarity.conf import IndexSettings
    from similarity.index.edge_fused import _per_part

    idx = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="parts",
                          tuning=IndexSettings(hnsw_ef=32, exact_filter_kb=0))
    idx.ensure(DIMS, SCHEMA)
    idx.upsert([point(n) for n in range(1, 31)])
    own = SearchFilter(match={"category_ids": 11})
    request = FusedQuery(vectors={"image": vec(3, 8), "text": vec(3, 4)}, weights=WEIGHTS, fetch=100, limit=5,
                         filter=own)

    def asks(req: FusedQuery) -> int:
        return _per_part(idx, req, 20, idx.params_for(req.filter, ["fused"], near=req.near))

    assert asks(request) == 20  # the filtered list (128) holds fetch
    assert asks(replace(request, near=True)) == 100  # the near list (32) does not
    assert asks(replace(request, near=True, fetch=30)) == 20
    assert asks(replace(request, filter=None)) == 100  # unfiltered: 32
    idx.tuning = IndexSettings(hnsw_ef=32, exact_filter_kb=40_000)
    assert asks(request) == 20  # exact: every passing point scored
    idx.close()


@pytest.mark.parametrize("backend", ["edge", "client-memory"])
def test_a_selecting_filter_is_exact_when_it_leaves_few_points_else_walks_with_the_filtered_ef(backend, tmp_path):
    """A filter that keeps only some points: when the payload indexes estimate that they hold at
    most ``EXACT_FILTER_KB`` of the searched vector, every one is scored (exact); otherwise the
    graph is walked with ``hnsw_ef_filtered`` (default 4 × ``hnsw_ef``). Exclusions alone (the
    query's own id, merchandising blocks) keep ``hnsw_ef``."""
    from similarity.conf import IndexSettings

    assert IndexSettings(hnsw_ef=100).search_ef(filtered=True) == 400
    assert IndexSettings(hnsw_ef=100, hnsw_ef_filtered=250).search_ef(filtered=True) == 250
    assert IndexSettings(hnsw_ef=100).search_ef(filtered=False) == 100
    # the query's own category: hnsw_ef up to NEAR_EF_POINTS, then × √(points / it), at most the filtered list
    near = IndexSettings(hnsw_ef=128)
    assert [near.near_ef(n) for n in (1_000, 100_000, 300_000, 1_000_000, 10_000_000)] == [128, 128, 222, 405, 512]
    assert IndexSettings(hnsw_ef=128, near_ef_points=400_000).near_ef(1_600_000) == 256
    assert near.near_ef(None) == 512  # a size the server does not give: the filtered list
    assert IndexSettings(exact_filter_kb=1).exact_for(64, 4) and not IndexSettings(exact_filter_kb=1).exact_for(65, 4)
    assert not IndexSettings(exact_filter_kb=0).exact_for(1, 4)
    assert SearchFilter(match={"category_ids": 1}).selects and SearchFilter(ids=frozenset()).selects
    assert not SearchFilter(exclude_ids=frozenset({pid(1)}), exclude_any={"group": ["g"]}).selects

    # fused vector: 12 floats = 48 bytes a point; 1 KB holds 21 of them
    tuning = IndexSettings(hnsw_ef=32, exact_filter_kb=1)
    if backend == "edge":
        idx = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="ef", tuning=tuning)
    else:
        idx = QdrantServerIndex(url=":memory:", collection="ef", tuning=tuning)
    idx.ensure(DIMS, SCHEMA)
    idx.upsert([point(n) for n in range(1, 31)])
    asked: list[tuple[bool, int]] = []
    name = "search_params" if backend == "edge" else "_search_params"
    real = getattr(idx, name)

    def spy(*, filtered: bool = False, exact: bool = False, ef: int | None = None):
        params = real(filtered=filtered, exact=exact, ef=ef)
        asked.append((bool(params.exact), params.hnsw_ef))
        return params

    setattr(idx, name, spy)
    request = FusedQuery(vectors={"image": vec(3, 8), "text": vec(3, 4)}, weights=WEIGHTS, fetch=20, limit=5)
    idx.query_fused(request)
    idx.query_fused(replace(request, filter=SearchFilter(exclude_ids=frozenset({pid(3)}))))
    few = idx.query_fused(replace(request, filter=SearchFilter(match={"category_ids": 11})))  # 10 points
    many = idx.query_fused(replace(request, filter=SearchFilter(match={"category_ids": 1})))  # all 30
    idx.query("text", vec(3, 4), limit=5, filter=SearchFilter(match={"category_ids": 11}))  # 4 floats: exact
    # a filter relative to the query (find_similar's own category: ``near``): never exact, hnsw_ef as
    # unfiltered (the plumbing only: 30 points are scanned by the engine whatever the params say)
    near = idx.query_fused(replace(request, filter=SearchFilter(match={"category_ids": 11}), near=True))
    # an index of more points than NEAR_EF_POINTS: a longer list (30 points, 10: ⌈32 × √3⌉ = 56); 0: no rule
    idx.tuning = replace(tuning, near_ef_points=10)
    idx.query_fused(replace(request, filter=SearchFilter(match={"category_ids": 11}), near=True))
    idx.tuning = replace(tuning, near_ef_points=0)
    idx.query_fused(replace(request, filter=SearchFilter(match={"category_ids": 11}), near=True))
    idx.tuning = replace(tuning, exact_filter_kb=0)
    idx.query_fused(replace(request, filter=SearchFilter(match={"category_ids": 11})))
    assert asked == [(False, 32), (False, 32), (True, 128), (False, 128), (True, 128), (False, 32), (False, 56),
                     (True, 128), (False, 128)]
    assert [h.id for h in near] == [h.id for h in few]
    assert few and all(11 in h.payload["category_ids"] for h in few) and len(many) == 5
    idx.close()


@pytest.mark.parametrize("backend", ["edge", "client-memory"])
def test_the_fused_vector_is_stored_in_float16_and_ranks_as_float32(backend, tmp_path):
    """``FUSED_DATATYPE = "float16"``: a new generation stores the fused vector in half
    precision (image and text stay float32: their exact scores are the ones shown); the fused
    ranking and scores are float32's. ``EXACT_FILTER_KB`` still counts a point at its float32
    size (the limit is a cost, which float16 barely lowers): the same filters are scanned and
    walked either way. ``"float32"`` (the default) builds as before; other types are refused."""
    from similarity.conf import IndexSettings, _build
    from similarity.exceptions import SimilarityConfigError
    from similarity.index.base import engine_kb, float32_kb

    assert IndexSettings().fused_datatype == "float32"
    assert [engine_kb(10_000, "float16"), engine_kb(10_000, "float32"), engine_kb(1, "float16")] == [5_000, 10_000, 1]
    assert [float32_kb(5_000, "float16"), float32_kb(5_000, None), float32_kb(5_000, "Float16")] == [
        10_000, 5_000, 10_000]
    with pytest.raises(SimilarityConfigError, match="FUSED_DATATYPE"):
        _build({"INDEX": {"FUSED_DATATYPE": "float64"}})
    indexes, asked = {}, []
    for datatype in ("float16", "float32"):
        tuning = IndexSettings(hnsw_ef=32, exact_filter_kb=1, fused_datatype=datatype)  # 21 points of 48 bytes
        if backend == "edge":
            idx = QdrantEdgeIndex(path=str(tmp_path / datatype), collection="typed", tuning=tuning)
        else:  # the local mode stores float32 whatever it is asked: what a server is asked is checked
            idx = QdrantServerIndex(url=":memory:", collection="typed", tuning=tuning)
            created: dict[str, dict] = {}
            create = idx.client.create_collection

            def record(name, _create=create, _created=created, **kwargs):
                _created[name] = kwargs
                return _create(name, **kwargs)

            idx.client.create_collection = record
        idx.ensure(DIMS, SCHEMA)
        idx.upsert([point(n) for n in range(1, 61)])
        if backend == "edge":
            stored = json.loads(next((tmp_path / datatype).glob("*/edge_config.json")).read_text())["vectors"]
            types = {name: v.get("datatype", "float32") for name, v in stored.items()}
            assert idx.fused_datatype() == datatype
        else:
            (sent,) = created.values()
            types = {name: getattr(v.datatype, "value", None) or "float32"
                     for name, v in sent["vectors_config"].items()}
        assert types == {"fused": datatype, "image": "float32", "text": "float32"}
        name = "search_params" if backend == "edge" else "_search_params"
        real = getattr(idx, name)

        def spy(*, filtered=False, exact=False, ef=None, _real=real, _datatype=datatype):
            asked.append((_datatype, exact))
            return _real(filtered=filtered, exact=exact, ef=ef)

        setattr(idx, name, spy)
        indexes[datatype] = idx

    request = FusedQuery(vectors={"image": vec(3, 8), "text": vec(3, 4)}, weights=WEIGHTS, fetch=40, limit=10)
    half, full = (indexes[t].query_fused(request) for t in ("float16", "float32"))
    assert [h.id for h in half] == [h.id for h in full]
    assert [h.scores for h in half] == [h.scores for h in full], "the per-modality scores: float32 in both"
    np.testing.assert_allclose([h.score for h in half], [h.score for h in full], atol=1e-6)  # rescored exactly
    asked.clear()
    for datatype in ("float16", "float32"):
        for kept in ({"in_stock": True}, {"category_ids": 11}):  # 30 points: graph; 20: exact
            assert len(indexes[datatype].query_fused(replace(request, filter=SearchFilter(match=kept)))) == 10
    assert asked == [("float16", False), ("float16", True), ("float32", False), ("float32", True)]
    for idx in indexes.values():
        idx.close()


def test_float16_rounding_at_the_end_of_the_list_is_undone_by_the_rescored_margin(tmp_path, monkeypatch):
    """The engine ranks by the float16 fused vector; two points a rounding apart can trade places
    at the end of the list. The search asks for a few more rows (``with_margin``), rescored with
    the exact float32 cosines, and cuts: the list is the exact ranking's. Without the margin the
    same index misses some (the test shows the rounding is real here)."""
    from similarity.conf import IndexSettings
    from similarity.index import base, edge_fused

    assert [base.with_margin(n) for n in (1, 10, 20, 50)] == [3, 12, 24, 60]
    n, rng = 3000, np.random.default_rng(5)
    image, text = rng.normal(size=(n, 8)), rng.normal(size=(n, 4))
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    idx = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="margin",
                          tuning=IndexSettings(fused_datatype="float16"))
    idx.ensure(DIMS, SCHEMA)
    idx.upsert([PointData(pid(i), {"image": image[i].tolist(), "text": text[i].tolist()}, {"pk": i, "group": i})
                for i in range(n)])
    assert idx.fused_datatype() == "float16"

    def recall(queries: range) -> float:
        found = []
        for q in queries:
            hits = idx.query_fused(FusedQuery(vectors={"image": image[q].tolist(), "text": text[q].tolist()},
                                              weights=WEIGHTS, fetch=100, limit=10))
            exact = np.argsort(-(WEIGHTS["image"] * image @ image[q] + WEIGHTS["text"] * text @ text[q]))[:10]
            assert len(hits) == 10 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            found.append(len({h.payload["pk"] for h in hits} & {int(i) for i in exact}) / 10)
        return float(np.mean(found))

    assert recall(range(300)) == 1.0
    monkeypatch.setattr(edge_fused, "with_margin", lambda limit: limit)
    assert recall(range(300)) < 1.0  # 0.9983 when written: 5 of 3,000 rows
    idx.close()


@pytest.mark.parametrize("datatype", ["float16", "float32"])
@pytest.mark.parametrize("backend", ["edge", "client-memory"])
def test_an_int8_index_leaves_small_filters_to_the_engines_int8_scan(backend, datatype, tmp_path):
    """With int8 quantisation a generation is built with a full-scan threshold of twice
    ``EXACT_FILTER_KB``, and a filter under the limit is searched without ``exact`` (which would drop
    the quantisation): Qdrant's planner scans the int8 copy and rescores with the originals. A
    generation built with a smaller threshold, or a float32 index, keeps ``exact=True``. The
    engine counts a threshold's points by the stored bytes, so a float16 fused vector is built
    with half the KB (the same points) and read back in KB of float32."""
    from similarity.conf import IndexSettings

    # fused vector: 12 floats = 48 bytes a point; 3 KB hold 64 points, 6 KB 128, 12 KB 256
    tuning = IndexSettings(quantization="int8", exact_filter_kb=3, indexing_threshold_kb=1, hnsw_ef=32,
                           fused_datatype=datatype)
    engine = 3 if datatype == "float16" else 6  # 128 points of 24 or 48 bytes
    assert tuning.full_scan_kb == 6 and replace(tuning, quantization="").full_scan_kb == 1
    assert replace(tuning, exact_filter_kb=0).full_scan_kb == 1
    assert built_full_scan_kb({"fused": 6, "text": 1, "image": 2}, ["image", "text"]) == 1
    assert built_full_scan_kb({"fused": 6}, ["image", "text"]) is None and built_full_scan_kb({"fused": 6}, []) is None
    assert tuning.scans_int8(64, 12, 6) and not tuning.scans_int8(65, 12, 6) and not tuning.scans_int8(1, 12, None)
    if backend == "edge":
        idx = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="scan", tuning=tuning)
    else:
        idx = QdrantServerIndex(url=":memory:", collection="scan", tuning=tuning)
        created: dict[str, object] = {}
        create, describe = idx.client.create_collection, idx.client.get_collection

        def record(name, **kwargs):
            created[name] = kwargs
            return create(name, **kwargs)

        def described(name):  # a server keeps the config it was given; the local mode does not
            info = describe(name)
            sent: dict = created.get(name) or next(iter(created.values()))  # by its alias: the one generation
            info.config.hnsw_config = sent["hnsw_config"]
            info.config.params.vectors = sent["vectors_config"]
            return info

        idx.client.create_collection, idx.client.get_collection = record, described
    idx.ensure(DIMS, SCHEMA)
    idx.upsert([point(n) for n in range(1, 151)])
    assert idx.optimize()
    # the fused vector's graph is built to scan up to twice the limit; the others keep theirs
    if backend == "edge":
        built = json.loads(next((tmp_path / "edge").glob("*/edge_config.json")).read_text())
        assert built["vectors"]["fused"]["hnsw_config"]["full_scan_threshold"] == engine
        assert idx._full_scan_kb == {"fused": 6, "image": 1, "text": 1}  # in KB of float32
        assert built["hnsw_config"]["full_scan_threshold"] == 1 and not built["vectors"]["text"].get("hnsw_config")
        segments = (tmp_path / "edge").glob("*/segments/*/segment.json")
        graphs = [json.loads(f.read_text())["config"]["vector_data"] for f in segments]
        options = [{name: v["index"]["options"]["full_scan_threshold"] for name, v in g.items()}
                   for g in graphs if g["fused"]["index"]["type"] == "hnsw"]
        assert options and all(o == {"fused": engine, "image": 1, "text": 1} for o in options), "what it built"
    else:
        (sent,) = created.values()
        assert sent["vectors_config"]["fused"].hnsw_config.full_scan_threshold == engine
        assert idx._collection_facts()[0]["fused"] == 6  # in KB of float32
        assert sent["hnsw_config"].full_scan_threshold == 1 and sent["vectors_config"]["text"].hnsw_config is None
    asked: list[bool] = []
    name = "search_params" if backend == "edge" else "_search_params"
    real = getattr(idx, name)

    def spy(*, filtered: bool = False, exact: bool = False):
        asked.append(exact)
        return real(filtered=filtered, exact=exact)

    setattr(idx, name, spy)
    request = FusedQuery(vectors={"image": vec(3, 8), "text": vec(3, 4)}, weights=WEIGHTS, fetch=20, limit=5,
                         filter=SearchFilter(match={"category_ids": 11}))  # 50 points: 2,400 bytes
    scanned = idx.query_fused(request)
    idx.tuning = replace(tuning, quantization="")  # float32 settings: every passing point exact
    exact = idx.query_fused(request)
    # a limit raised after the build: the generation's planner would walk the graph, so exact
    idx.tuning = replace(tuning, exact_filter_kb=12)
    idx.query_fused(replace(request, filter=SearchFilter(match={"category_ids": 1})))  # 150 points: 7,200 bytes
    assert asked == [False, True, True]
    assert [h.id for h in scanned] == [h.id for h in exact]
    assert all(11 in h.payload["category_ids"] for h in scanned) and len(scanned) == 5
    idx.close()


def test_server_reuses_a_filters_estimated_size(tmp_path):
    """The server's exact-or-graph choice asks Qdrant how many points a filter keeps; filters with
    the same conditions (another query's own id left out) reuse that answer for a minute, a filter
    of ids asks nothing, and an old answer is asked again."""
    from similarity.conf import IndexSettings

    idx = QdrantServerIndex(url=":memory:", collection="sizes", tuning=IndexSettings(exact_filter_kb=1))
    idx.ensure(DIMS, SCHEMA)
    idx.upsert([point(n) for n in range(1, 31)])
    counted: list[object] = []
    real_count = idx.client.count

    def count(*args, **kwargs):  # the real client's count, recorded
        counted.append(kwargs.get("count_filter"))
        return real_count(*args, **kwargs)

    idx.client.count = count
    request = FusedQuery(vectors={"image": vec(3, 8), "text": vec(3, 4)}, weights=WEIGHTS, fetch=20, limit=5)
    category = SearchFilter(match={"category_ids": 11})
    first = idx.query_fused(replace(request, filter=replace(category, exclude_ids=frozenset({pid(4)}),
                                                            exclude={"brand": "b1"})))
    second = idx.query_fused(replace(request, filter=replace(category, exclude_ids=frozenset({pid(7)}))))
    assert len(counted) == 1  # one estimate for both, counted without the exclusions
    assert idx._filter_sizes.size(category, lambda f: -1) == 10  # the ten of category 11
    assert {h.id for h in first} <= {pid(n) for n in range(1, 31) if n % 3 == 1 and n % 2 == 0} - {pid(4)}
    assert pid(7) not in {h.id for h in second} and len(second) == 5
    idx.query_fused(replace(request, filter=SearchFilter(match={"category_ids": 12})))  # other conditions
    assert len(counted) == 2
    by_ids = idx.query_fused(replace(request, filter=SearchFilter(ids=frozenset({pid(1), pid(2)}))))
    assert len(counted) == 2 and {h.id for h in by_ids} == {pid(1), pid(2)}
    idx._filter_sizes.seconds = 0.0  # every answer is old
    idx.query_fused(replace(request, filter=category))
    assert len(counted) == 3
    idx._filter_sizes.seconds = 60.0
    target = idx.start_rebuild(DIMS, SCHEMA)  # a new generation: what was known of the old is dropped
    target.upsert([point(n) for n in range(1, 4)])
    idx.finish_rebuild(target)
    idx.query_fused(replace(request, filter=category))
    assert len(counted) == 4 and idx._filter_sizes.size(category, lambda f: -1) == 1
    idx.close()


def test_filter_sizes_forget_the_oldest_beyond_capacity():
    from similarity.index.filter_sizes import FilterSizes, selecting_key

    sizes = FilterSizes(capacity=2)
    asked: list[int] = []

    def count(n: int):
        return lambda _filter: asked.append(n) or n

    for n in (1, 2, 1, 3, 2):  # 3 pushes out 1, the oldest answer; 2 is still known
        assert sizes.size(SearchFilter(match={"c": n}), count(n)) == n
    assert asked == [1, 2, 3]
    assert sizes.size(SearchFilter(match={"c": 1}), count(1)) == 1 and asked == [1, 2, 3, 1]
    assert selecting_key(SearchFilter(match={"c": 1}, exclude={"b": 2})) == selecting_key(SearchFilter(match={"c": 1}))
    assert selecting_key(SearchFilter(match_any={"c": [1]})) != selecting_key(SearchFilter(match={"c": 1}))
    # the size is counted without the exclusions, whichever filter of that key comes first
    counted: list[SearchFilter] = []
    blocked = SearchFilter(match={"c": 9}, exclude={"b": 2}, exclude_any={"g": [1]}, exclude_ids=frozenset({"x"}))
    assert FilterSizes().size(blocked, lambda f: counted.append(f) or 5) == 5
    assert counted == [SearchFilter(match={"c": 9})]


# -- the one-request fused query (find_similar's vector side) ---------------------------------
WEIGHTS = {"image": 0.3, "text": 0.7}


def exact_fused(points: list[PointData], query: PointData, weights=WEIGHTS) -> dict[str, float]:
    """Brute force: the weighted mean of the cosines each point has (fusion.fuse_scores' rule)."""
    from similarity.fusion import fuse_scores

    ids = [p.id for p in points]
    cosines = {
        m: np.array([float(np.dot(query.vectors[m], p.vectors[m])) if m in p.vectors else np.nan for p in points])
        for m in query.vectors
    }
    return dict(zip(ids, fuse_scores(cosines, weights), strict=True))


def test_query_fused_equals_exact_fusion_with_exact_scores(index):

    points = [point(n, image=n % 4 != 0) for n in range(1, 61)]
    index.upsert(points)
    query = points[4]
    hits = index.query_fused(FusedQuery(vectors=query.vectors, weights=WEIGHTS, fetch=60, limit=10,
                                        filter=SearchFilter(exclude_ids=frozenset({query.id}))))
    exact = exact_fused(points, query)
    exact.pop(query.id)
    assert [h.id for h in hits] == sorted(exact, key=exact.get, reverse=True)[:10]
    for hit in hits:
        assert hit.score == pytest.approx(exact[hit.id], abs=1e-5)
        stored = next(p for p in points if p.id == hit.id)
        assert set(hit.scores) == {m for m in query.vectors if m in stored.vectors}  # no image: text only
        for m, score in hit.scores.items():
            assert score == pytest.approx(float(np.dot(query.vectors[m], stored.vectors[m])), abs=1e-5)
    assert any("image" not in h.scores for h in hits) or all(n % 4 for n in range(1, 11))


def test_a_small_filter_on_an_optimised_int8_index_is_answered_exactly(tmp_path):
    """Edge with HNSW graphs and int8 (tiny indexing threshold): a filter that leaves few points
    is searched exact, so its hits are brute force's (in order), with or without an image."""
    from similarity.conf import IndexSettings

    idx = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="exact",
                          tuning=IndexSettings(indexing_threshold_kb=1, quantization="int8", optimize_after=0))
    idx.ensure(DIMS, SCHEMA)
    points = [point(n, image=n % 7 != 0, category_ids=[1, 20 + n % 40]) for n in range(1, 801)]
    idx.upsert(points)
    assert idx.optimize() and idx.indexed_vectors() > 0
    for n in (5, 123, 640):
        query = points[n]
        flt = SearchFilter(match={"category_ids": 20 + n % 40}, exclude_ids=frozenset({query.id}))
        hits = idx.query_fused(FusedQuery(vectors=query.vectors, weights=WEIGHTS, fetch=50, limit=10, filter=flt))
        passing = [p for p in points if 20 + n % 40 in p.payload["category_ids"] and p.id != query.id]
        exact = exact_fused(passing, query)
        assert [h.id for h in hits] == sorted(exact, key=exact.get, reverse=True)[:10]
    idx.close()


def test_query_fused_scores_candidates_found_through_one_modality_exactly(index):
    """fetch smaller than the catalog: a candidate found only by its text still gets its exact
    image cosine (the rescoring stage), so the fused order equals brute force on the candidates."""

    points = [point(n) for n in range(1, 81)]
    index.upsert(points)
    query = points[0]
    hits = index.query_fused(FusedQuery(vectors=query.vectors, weights=WEIGHTS, fetch=5, limit=8,
                                        filter=SearchFilter(exclude_ids=frozenset({query.id}))))
    exact = exact_fused(points, query)
    for hit in hits:
        assert set(hit.scores) == {"image", "text"}
        assert hit.score == pytest.approx(exact[hit.id], abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_query_fused_scores_of_an_exact_copy_with_and_without_an_image(index):
    """A duplicate listing (same photo, same title: both cosines 1.0) keeps its image score; a
    point without an image has none: told apart by the payload's list of vectors."""

    original = point(1, model_versions={"image": "v", "text": "v"})
    copy = PointData(pid(2), dict(original.vectors), {**original.payload, "pk": 2, "group": 2})
    no_image = point(3, image=False, model_versions={"text": "v"})
    no_image = PointData(no_image.id, {"text": original.vectors["text"]}, no_image.payload)
    index.upsert([original, copy, no_image])
    hits = index.query_fused(FusedQuery(vectors=original.vectors, weights=WEIGHTS, fetch=10, limit=5,
                                        filter=SearchFilter(exclude_ids=frozenset({original.id})),
                                        payload_fields=("pk", "model_versions")))
    scores = {h.payload["pk"]: h.scores for h in hits}
    assert scores[2] == pytest.approx({"image": 1.0, "text": 1.0}, abs=1e-5)
    assert scores[3] == pytest.approx({"text": 1.0}, abs=1e-5)


def test_query_fused_filters_payload_fields_and_one_per_group(index):

    # 30 variants of one product (group 7) close to the query, then 20 other products
    base = point(7)
    variants = [
        PointData(pid(100 + k), {m: (np.asarray(v) + 0.01 * np.random.default_rng(k).normal(size=len(v))).tolist()
                                 for m, v in base.vectors.items()},
                  {**base.payload, "pk": 100 + k, "group": 7, "in_stock": True})
        for k in range(30)
    ]
    others = [point(n) for n in range(200, 220)]
    index.upsert(variants + others)
    request = FusedQuery(vectors=base.vectors, weights=WEIGHTS, fetch=60, limit=6, group_by="group",
                         payload_fields=("pk", "group"))
    hits = index.query_fused(request)
    groups = [h.payload["group"] for h in hits]
    assert len(hits) == 6 and len(set(groups)) == 6 and groups[0] == 7  # variants never crowd the others out
    assert set(hits[0].payload) == {"pk", "group"}
    in_stock = index.query_fused(FusedQuery(vectors=base.vectors, weights=WEIGHTS, fetch=60, limit=50,
                                            filter=SearchFilter(match={"in_stock": False})))
    assert in_stock and all(not h.payload["in_stock"] for h in in_stock)


def test_query_fused_without_active_weights_is_empty(index):

    index.upsert([point(1), point(2)])
    assert index.query_fused(FusedQuery(vectors=point(1).vectors, weights={"image": 0, "text": 0},
                                        fetch=10, limit=5)) == []


def test_server_writer_that_read_an_old_collection_writes_the_fused_vector_after_the_switch(monkeypatch):
    """The upgrade window on the server: a writer read the alias's collection before the fused
    vector existed (cached for a minute); a rebuild then switched the alias to a generation with
    it. The writer's next upsert lands through the alias with its fused vector and flag."""
    from similarity.index import qdrant
    from similarity.index.base import FUSED, PARTIAL

    with monkeypatch.context() as old_code:
        old_code.setattr(qdrant, "with_fused", dict)
        writer = QdrantServerIndex(url=":memory:", collection="products")
        writer.ensure(DIMS, SCHEMA)
    assert not writer.has_vector(FUSED)  # cached: the old collection
    admin = QdrantServerIndex(url=":memory:", collection="products", client=writer.client)
    target = admin.start_rebuild(DIMS, SCHEMA)
    admin.finish_rebuild(target)
    writer.upsert([point(1), point(2, image=False)])
    stored = {str(r.id): r for r in writer.client.retrieve("products", ids=[pid(1), pid(2)],
                                                            with_vectors=[FUSED], with_payload=True)}
    assert set(stored) == {pid(1), pid(2)}
    assert all(FUSED in (r.vector or {}) for r in stored.values()), "written with the fused vector"
    assert PARTIAL not in (stored[pid(1)].payload or {}) and stored[pid(2)].payload[PARTIAL] == 1
    reader = QdrantServerIndex(url=":memory:", collection="products", client=writer.client)
    hits = reader.query_fused(FusedQuery(vectors=point(1).vectors, weights=WEIGHTS, fetch=10, limit=2))
    assert {h.id for h in hits} == {pid(1), pid(2)}


@pytest.mark.parametrize("backend", ["edge", "client-memory"])
def test_query_fused_on_a_collection_without_the_fused_vector(backend, tmp_path, monkeypatch):
    """A collection created before the fused vector existed (until its next rebuild) answers with
    per-modality searches: the same hits and scores as a collection with it; and a one-modality
    request searches that modality's own vector."""
    from similarity.index import edge, qdrant
    from similarity.index.base import FUSED, FusedQuery

    def make(name: str) -> QdrantEdgeIndex | QdrantServerIndex:
        if backend == "edge":
            return QdrantEdgeIndex(path=str(tmp_path / name), collection="products")
        return QdrantServerIndex(url=":memory:", collection="products")

    points = [point(n, image=n % 5 != 0) for n in range(1, 41)]
    new = make("new")
    new.ensure(DIMS, SCHEMA)
    monkeypatch.setattr(edge, "with_fused", dict)
    monkeypatch.setattr(qdrant, "with_fused", dict)
    old = make("old")
    old.ensure(DIMS, SCHEMA)
    assert new.has_vector(FUSED) and not old.has_vector(FUSED)
    query = points[2]
    flt = SearchFilter(exclude_ids=frozenset({query.id}))
    answers = []
    for idx in (new, old):
        idx.upsert(points)
        both = idx.query_fused(FusedQuery(vectors=query.vectors, weights=WEIGHTS, fetch=40, limit=10, filter=flt))
        text_only = idx.query_fused(FusedQuery(vectors=query.vectors, weights={"image": 0, "text": 1}, fetch=40,
                                               limit=5, filter=flt))
        answers.append((both, text_only))
        assert set(idx.retrieve([query.id], with_vectors=True)[query.id].vectors) == {"image", "text"}
    (new_both, new_text), (old_both, old_text) = answers
    assert [h.id for h in new_both] == [h.id for h in old_both]
    for a, b in zip(new_both, old_both, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-5)
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
    exact_text = sorted((p for p in points if p.id != query.id),
                        key=lambda p: -float(np.dot(query.vectors["text"], p.vectors["text"])))[:5]
    assert [h.id for h in new_text] == [h.id for h in old_text] == [p.id for p in exact_text]
    new.close()
    old.close()


def test_the_fused_vectors_flag_stays_inside_the_index(index):
    """A point without an image is flagged for the fused search (an indexed payload field of the
    index's own): never returned, and kept when the payload is replaced."""
    from similarity.index.base import PARTIAL, FusedQuery

    index.upsert([point(1), point(2, image=False), point(3)])
    index.set_payload(pid(2), {"pk": 2, "group": 2, "brand": "replaced"})

    def flagged(value: int) -> set[str]:
        return {h.id for h in index.query("text", vec(2, 4), limit=10, filter=SearchFilter(match={PARTIAL: value}))}

    assert flagged(1) == {pid(2)} and flagged(2) == set(), "1: no image (kept by set_payload); 2: no text"
    assert PARTIAL not in index.retrieve([pid(2)])[pid(2)].payload
    assert all(PARTIAL not in p.payload for p in index.iter_points())
    hits = index.query_fused(FusedQuery(vectors=point(2, image=False).vectors | {"image": vec(1002, 8)},
                                        weights=WEIGHTS, fetch=10, limit=3))
    assert {h.id for h in hits} == {pid(1), pid(2), pid(3)}
    no_image = next(h for h in hits if h.id == pid(2))
    assert no_image.scores == pytest.approx({"text": 1.0}, abs=1e-5) and no_image.score == pytest.approx(1.0, abs=1e-5)
    assert PARTIAL not in no_image.payload


def test_query_fused_ranks_points_missing_different_parts_each_on_its_own_scale(index):
    """Points without text and points without an image are searched apart: under weights 0.3/0.7
    an image-only point (fused score 0.95, dot product with the weighted query 0.3 × 0.95 = 0.285)
    is not pushed out by twenty text-only ones (fused 0.5, dot product 0.7 × 0.5 = 0.35)."""

    query = {"image": [1.0] + [0.0] * 7, "text": [1.0, 0.0, 0.0, 0.0]}
    image_only = PointData(pid(99), {"image": [0.95, float(np.sqrt(1 - 0.95**2))] + [0.0] * 6},
                           {"pk": 99, "group": 99})
    text_only = []
    for n in range(20):
        angle = 2 * np.pi * n / 20
        rest = np.sqrt(1 - 0.25) * np.array([np.cos(angle), np.sin(angle), 0.0])
        text_only.append(PointData(pid(200 + n), {"text": [0.5, *rest.tolist()]}, {"pk": 200 + n, "group": 200 + n}))
    index.upsert([image_only, *text_only])
    hits = index.query_fused(FusedQuery(vectors=query, weights=WEIGHTS, fetch=10, limit=5))
    assert hits[0].id == pid(99)
    assert hits[0].score == pytest.approx(0.95, abs=1e-5) and hits[0].scores == pytest.approx({"image": 0.95}, abs=1e-5)
    assert all(h.score == pytest.approx(0.5, abs=1e-5) for h in hits[1:])
