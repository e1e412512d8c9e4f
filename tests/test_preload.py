"""Reading a generation's files into the page cache when a process opens it (INDEX["PRELOAD"]).
Real Qdrant Edge shards on disk."""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from similarity.conf import IndexSettings
from similarity.index.base import PointData
from similarity.index.edge import QdrantEdgeIndex
from similarity.index.preload import preload

DIMS = {"image": 16, "text": 8}
SCHEMA = {"pk": "keyword", "group": "keyword"}


def _filled(tmp_path: Path, **tuning) -> QdrantEdgeIndex:
    index = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="p", tuning=IndexSettings(**tuning))
    index.ensure(DIMS, SCHEMA)
    rng = np.random.default_rng(0)
    index.upsert([
        PointData(str(uuid.UUID(int=i + 1)), {k: (v / np.linalg.norm(v)).tolist() for k, v in
                                              {n: rng.normal(size=d) for n, d in DIMS.items()}.items()},
                  {"pk": str(i), "group": str(i)})
        for i in range(300)
    ])
    return index


def _generation(index: QdrantEdgeIndex) -> Path:
    return index.root / index.pointer.read_text().strip()


def test_preload_reads_every_file_of_the_generation_once(tmp_path):
    index = _filled(tmp_path, preload=False)
    folder = _generation(index)
    index.close()
    on_disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
    done = preload(folder)
    assert done["preloaded"] and on_disk > 0
    assert done["read_mb"] == pytest.approx(on_disk, rel=0.05) and done["files_mb"] == pytest.approx(on_disk, rel=0.05)
    refused = preload(folder, share=0.0)  # more than the memory it may take: nothing read
    assert not refused["preloaded"] and "read_mb" not in refused
    stop = threading.Event()
    stop.set()  # the generation was closed: the read stops
    stopped = preload(folder, stop=stop)
    assert stopped["stopped"] and stopped["read_mb"] == 0
    assert not preload(tmp_path / "gone")["preloaded"]  # a folder swept meanwhile: nothing, no error


def test_opening_a_generation_preloads_it_in_the_background_and_queries_meanwhile(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="similarity.index.preload")
    writer = _filled(tmp_path, preload=False)
    assert writer.preloading is None  # PRELOAD off: no thread
    writer.close()
    reader = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="p", tuning=IndexSettings())
    assert reader.count() == 300  # opens the live generation, answers at once
    assert reader.preloading is not None
    reader.preloading.join(timeout=30)
    assert not reader.preloading.is_alive()
    assert any(r.getMessage().startswith(f"preloaded {_generation(reader).name}:") for r in caplog.records)
    reader.close()
    again = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="p", tuning=IndexSettings())
    assert again.count() == 300 and again.preloading is None, "once per generation per process"
    # a generation being built is never read (it is written meanwhile); the switch opens it
    target = again.start_rebuild(DIMS, SCHEMA)
    target.upsert(list(again.iter_points()))
    assert target.preloading is None
    again.finish_rebuild(target)
    assert again.count() == 300
    assert again.preloading is not None, "the new live generation is read after the switch"
    again.preloading.join(timeout=30)
    again.close()
