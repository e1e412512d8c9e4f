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
from similarity.index import preload as preload_module
from similarity.index.base import PointData
from similarity.index.edge import QdrantEdgeIndex
from similarity.index.preload import _order, preload

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


def _on_disk_mb(folder: Path) -> float:
    """The generation's files but its write-ahead log (never read by a search), in MB."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and "wal" not in f.parts) / 2**20


def test_preload_reads_every_file_of_the_generation_once(tmp_path, monkeypatch):
    index = _filled(tmp_path, preload=False)
    folder = _generation(index)
    index.close()
    on_disk = _on_disk_mb(folder)
    assert any(f.is_file() for f in (folder / "wal").rglob("*")), "the shard has a write-ahead log"
    done = preload(folder)
    assert done["preloaded"] and done["complete"] and on_disk > 0 and done["skipped_mb"] == 0
    wal = sum(f.stat().st_size for f in (folder / "wal").rglob("*") if f.is_file())
    everything = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert done["files_mb"] * 2**20 == everything - wal, "the write-ahead log is never read"
    assert done["read_mb"] == pytest.approx(on_disk, rel=0.05) and done["files_mb"] == pytest.approx(on_disk, rel=0.05)
    refused = preload(folder, share=0.0)  # more than the memory it may take: nothing read
    assert not refused["preloaded"] and "read_mb" not in refused
    stop = threading.Event()
    stop.set()  # the generation was closed: the read stops
    stopped = preload(folder, stop=stop)
    assert stopped["stopped"] and stopped["read_mb"] == 0 and not stopped["complete"] and not stopped["preloaded"]
    monkeypatch.setattr(preload_module, "available_mb", lambda: 0.0)  # no memory known (not Linux): nothing
    assert preload(folder) == {"preloaded": False, "files_mb": pytest.approx(on_disk, rel=0.05),
                               "memory_available_mb": 0.0}
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


def test_when_the_files_exceed_the_memory_the_ones_every_search_reads_come_first(tmp_path, monkeypatch):
    """A 1M index with its originals on disk is more than the page cache can hold beside the
    serving process: the graphs and payload indexes are read, then the fused vector's originals
    (every find_similar reads them), then the other vectors', smallest first, the int8 copies
    (held in the engine's memory) last; a file that does not fit is skipped, never cut."""
    index = _filled(tmp_path, preload=False, quantization="int8", indexing_threshold_kb=1)
    index.optimize()  # the int8 copies are built with the graph
    folder = _generation(index)
    index.close()
    files = [f for f in folder.rglob("*") if f.is_file() and "wal" not in f.parts]
    ordered = _order(files)
    assert sorted(ordered) == sorted(files)

    def storage(f: Path) -> str | None:
        return next((p.removeprefix("vector_storage-") for p in f.parts if p.startswith("vector_storage-")), None)

    def kind(f: Path) -> str:
        if storage(f) is None or "deleted" in f.parts or f.name.startswith("deleted"):
            return "other"
        return "int8" if f.name.startswith("quantized") else storage(f)

    totals = {name: sum(f.stat().st_size for f in files if kind(f) == name) for name in ("image", "text")}

    def rank(f: Path) -> tuple[int, int]:
        k = kind(f)
        return {"other": (0, 0), "fused": (1, 0), "int8": (3, 0)}.get(k) or (2, totals[k])

    ranks = [rank(f) for f in ordered]
    assert ranks == sorted(ranks), [(kind(f), rank(f)) for f in ordered]
    assert {kind(f) for f in files} == {"other", "fused", "image", "text", "int8"}
    others = sum(f.stat().st_size for f in ordered if kind(f) == "other")
    fused = sum(f.stat().st_size for f in ordered if kind(f) == "fused")
    # memory for the small files and the fused originals, not for the rest
    monkeypatch.setattr(preload_module, "available_mb", lambda: (others + fused + 1024) / 2**20)
    done = preload(folder, share=1.0)
    assert done["preloaded"] and not done["complete"]
    read = round(done["read_mb"] * 2**20)
    assert others + fused <= read <= others + fused + 1024
    # whole files only: what was read is the sum of some files' sizes (the first ones, and small
    # ones after them that still fitted), never a file cut short
    sizes = [f.stat().st_size for f in ordered]
    taken, total = [], 0
    for size in sizes:
        if total + size <= others + fused + 1024:
            taken.append(size)
            total += size
    assert read == total
    assert done["read_mb"] + done["skipped_mb"] == pytest.approx(_on_disk_mb(folder), rel=0.01)
