"""Keeping Qdrant Edge's HNSW graphs built: optimised in a child process (qdrant-edge's optimise
holds the GIL), the live generation re-optimised as a copy while it keeps answering, and the
threshold that starts that in the background. Real Qdrant Edge shards on disk."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from similarity.conf import IndexSettings
from similarity.exceptions import IndexUnavailable
from similarity.index.base import FusedQuery, PointData, SearchFilter
from similarity.index.edge import QdrantEdgeIndex
from similarity.index.edge_optimize import optimize_in_child, reoptimize_live
from similarity.index.shard_lock import ShardLock

DIMS = {"image": 16, "text": 8}
SCHEMA = {"pk": "keyword", "group": "keyword"}


def points(start: int, n: int) -> list[PointData]:
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        vectors = {name: rng.normal(size=d) for name, d in DIMS.items()}
        unit = {k: (v / np.linalg.norm(v)).tolist() for k, v in vectors.items()}
        out.append(PointData(str(uuid.UUID(int=i + 1)), unit, {"pk": str(i), "group": str(i)}))
    return out


def edge(tmp_path, **tuning) -> QdrantEdgeIndex:
    index = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="products", lock_timeout=2,
                            tuning=IndexSettings(indexing_threshold_kb=1, **tuning))
    index.ensure(DIMS, SCHEMA)
    return index


def test_live_reoptimise_keeps_answering_and_loses_no_write(tmp_path):
    index = edge(tmp_path, optimize_after=0)
    index.upsert(points(0, 400))
    before = index.generation
    assert index.indexed_vectors() == 0
    done = threading.Event()
    result: list[bool] = []

    def run() -> None:
        result.append(reoptimize_live(index))
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    reads = written = 0
    query = points(0, 1)[0].vectors
    while not done.is_set():
        # readers see every point, and get answers, during the copy and the child's optimise
        assert index.count() == 400 + written - (1 if written else 0)
        hits = index.query_fused(FusedQuery(vectors=query, weights={"image": 0.5, "text": 0.5}, fetch=20, limit=5))
        assert len(hits) == 5
        reads += 1
        if written == 0 and reads > 2:  # writes during the re-optimise: journaled, then re-applied
            index.upsert(points(1000, 30))
            index.delete([points(5, 1)[0].id])
            written = 30
        time.sleep(0.01)
    thread.join()
    assert result == [True]
    assert reads > 3, "reads kept being answered while the copy was optimised"
    assert index.generation != before
    assert index.count() == 429
    assert index.retrieve([points(1029, 1)[0].id]) and not index.retrieve([points(5, 1)[0].id])
    assert index.indexed_vectors() >= 2 * 400, "the switched-in generation has its graphs built"
    index.close()


def test_unindexed_points_past_the_threshold_reoptimise_in_the_background(tmp_path):
    index = edge(tmp_path, optimize_after=300)
    first = index.generation
    for start in range(0, 400, 50):
        index.upsert(points(start, 50))
    deadline = time.monotonic() + 120
    while index.generation == first and time.monotonic() < deadline:
        time.sleep(0.2)
    assert index.generation != first, "the threshold started a background re-optimise"
    while index._compacting and time.monotonic() < deadline:
        time.sleep(0.1)
    assert index.count() == 400
    # what was copied is in the graphs; points written during the copy wait for the next one
    # (each point has three vectors: image, text and fused)
    assert index.indexed_vectors() > 0 and index.unindexed_vectors() < 3 * 400
    index.close()


def test_optimising_a_rebuild_generation_happens_in_a_child_and_respects_the_lock(tmp_path):
    live = edge(tmp_path, optimize_after=0)
    live.upsert(points(0, 10))
    target = live.start_rebuild(DIMS, SCHEMA)
    written = points(0, 300)
    no_image = [PointData(p.id, {"text": p.vectors["text"]}, p.payload) for p in written[250:]]
    target.upsert(written[:250] + no_image)
    assert target.optimize() is True  # closed here, optimised by `python -m similarity.index.edge_optimize`
    assert target.indexed_vectors() == 850  # image (250), text and fused (300 each)
    held = ShardLock(tmp_path / "edge" / target.generation)
    target.close()
    held.acquire(1)
    try:  # another holder: the child refuses cleanly instead of loading a shard it does not hold
        with pytest.raises(IndexUnavailable, match="optimising"):
            optimize_in_child(tmp_path / "edge" / target.generation, lock_timeout=0.2)
    finally:
        held.release()
    live.finish_rebuild(target)
    assert live.count() == 300 and live.indexed_vectors() == 850
    query = written[3].vectors
    best = live.query_fused(FusedQuery(vectors=query, weights={"text": 1.0}, fetch=10, limit=1, filter=SearchFilter()))
    assert best[0].payload["pk"] == "3"
    # the fused search on the optimised generation, a point with and one without an image
    for n in (3, 260):
        vectors = {"image": written[n].vectors["image"], "text": written[n].vectors["text"]}
        best = live.query_fused(FusedQuery(vectors=vectors, weights={"image": 0.5, "text": 0.5}, fetch=10, limit=1))
        assert best[0].payload["pk"] == str(n)
        assert best[0].scores == pytest.approx({"image": 1.0, "text": 1.0} if n < 250 else {"text": 1.0}, abs=1e-5)
        assert best[0].score == pytest.approx(1.0, abs=1e-5)
    live.close()


def test_the_index_records_its_size_and_the_check_warns_past_what_edge_is_sized_for(tmp_path, settings):
    import json

    from similarity.checks import EDGE_MAX_POINTS, check_settings

    index = edge(tmp_path, optimize_after=0)
    index.upsert(points(0, 20))
    target = index.start_rebuild(DIMS, SCHEMA)
    target.upsert(points(0, 25))
    index.finish_rebuild(target)
    stats = json.loads((tmp_path / "edge" / "products.stats.json").read_text())
    assert stats["points"] == 25 and stats["generation"] == index.generation
    index.close()

    settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": {**settings.SIMILARITY.get("INDEX", {}),
                                                            "PATH": str(tmp_path / "edge")}}
    assert not [m for m in check_settings() if m.id == "similarity.W012"]
    (tmp_path / "edge" / "products.stats.json").write_text(json.dumps({**stats, "points": EDGE_MAX_POINTS + 1}))
    warnings = [m for m in check_settings() if m.id == "similarity.W012"]
    assert len(warnings) == 1 and "QdrantServerIndex" in warnings[0].msg


def test_a_reoptimise_never_undoes_or_deletes_a_rebuild(tmp_path):
    """A rebuild (another process: another index object on the same folder) that switches while
    a re-optimise copies wins; a re-optimise's switch never sweeps a rebuild's waiting folder."""
    index = edge(tmp_path, optimize_after=0)
    index.upsert(points(0, 20))
    live = index.generation
    rebuild_process = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="products", lock_timeout=2,
                                      tuning=IndexSettings(indexing_threshold_kb=1, optimize_after=0))
    waiting = rebuild_process.start_rebuild(DIMS, SCHEMA)  # filled, optimised, not switched yet
    waiting.upsert(points(0, 25))
    waiting.close()
    copy = index.start_rebuild(DIMS, SCHEMA)
    copy.upsert(points(0, 20))
    assert index.finish_rebuild(copy, expect=live, sweep=False)
    assert (tmp_path / "edge" / waiting.generation).is_dir(), "the waiting rebuild generation is kept"

    another = index.start_rebuild(DIMS, SCHEMA)
    another.upsert(points(0, 20))
    switched_to = index.generation
    assert rebuild_process.finish_rebuild(waiting)  # the rebuild switches first
    assert not index.finish_rebuild(another, expect=switched_to, sweep=False)  # so this one backs off
    rebuild_process.close()
    assert index.generation == waiting.generation and index.count() == 25
    index.close()
