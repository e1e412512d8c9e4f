"""Read an index generation's files once, so that the kernel's page cache holds them
(``SIMILARITY["INDEX"]["PRELOAD"]``, on by default).

A process that has just opened a generation (at start, or after a rebuild's switch) reads its
HNSW graphs, payload indexes and, with ``ON_DISK``, its vectors from the disk, one page at a time,
as queries touch them: at 1M points (float32, ``ON_DISK``) the first queries took p50 / p99
15.9 / 27.0 ms against 2.7 / 3.9 ms once the files were in memory; at 100k with the vectors in RAM
(loaded at open anyway) the difference is small, p99 5.6 against 4.3 ms (docs/benchmarks.md,
"Scale in the steady state"). Reading the files sequentially in a background thread right after
the open gets there in seconds (13.6 GB in 25 s on the bench machine) while queries are answered;
the reads release the GIL. Skipped when the files would take more than :data:`MEMORY_SHARE` of the memory available
(the page cache would only evict something else).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: the most of ``MemAvailable`` an index's files may take to be preloaded
MEMORY_SHARE = 0.5
CHUNK = 1 << 24


def available_mb() -> float:
    """``MemAvailable`` from /proc/meminfo (0 where there is none: nothing is preloaded)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def preload(folder: Path, *, share: float = MEMORY_SHARE) -> dict[str, Any]:
    """Read every file under ``folder`` once (when they fit in ``share`` of the available memory).
    Returns what it did: ``preloaded``, ``files_mb``, ``read_mb``, ``seconds``."""
    files = [f for f in Path(folder).rglob("*") if f.is_file()]
    size_mb = sum(_size(f) for f in files) / 2**20
    memory = available_mb()
    if size_mb > share * memory:
        return {"preloaded": False, "files_mb": size_mb, "memory_available_mb": memory}
    started, read = time.perf_counter(), 0
    for path in files:
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    read += len(chunk)
        except OSError:  # a file replaced by the engine meanwhile: nothing to warm
            continue
    return {"preloaded": True, "files_mb": size_mb, "read_mb": read / 2**20,
            "seconds": time.perf_counter() - started}


def preload_in_background(folder: Path) -> threading.Thread:
    """:func:`preload` in a daemon thread; logs what it did."""
    def run() -> None:
        try:
            done = preload(folder)
        except Exception:  # noqa: BLE001 - warming a cache must never hurt the process
            logger.exception("could not preload %s", folder)
            return
        if done["preloaded"]:
            logger.info("preloaded %s: %.0f MB in %.1f s", Path(folder).name, done["read_mb"], done["seconds"])
        else:
            logger.info("not preloading %s: %.0f MB of files, %.0f MB of memory available",
                        Path(folder).name, done["files_mb"], done["memory_available_mb"])

    thread = threading.Thread(target=run, name=f"similarity-preload-{Path(folder).name}", daemon=True)
    thread.start()
    return thread


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
