"""Read an index generation's files once, so that the kernel's page cache holds them
(``SIMILARITY["INDEX"]["PRELOAD"]``, on by default; Linux: elsewhere the free memory is not known
and nothing is read).

A process that has just opened a generation (at start, or after a rebuild's switch) reads its
HNSW graphs, payload indexes and, with ``ON_DISK``, its vectors from the disk, one page at a time,
as queries touch them: at 1M points (float32, ``ON_DISK``) the first queries took p50 / p99
15.9 / 27.0 ms against 2.7 / 3.9 ms once the files were in memory; at 100k with the vectors in RAM
(loaded at open anyway) the difference is small, p99 5.6 against 4.3 ms (docs/benchmarks.md,
"Scale in the steady state"). Reading the files sequentially in a background thread right after
the open gets there in seconds (13.6 GB in 25 s on the bench machine) while queries are answered;
the reads release the GIL.

Each generation is read at most once per process (a worker that opens and closes the index for
every task does not read it again), never while it is being built (a pinned generation), and the
read stops when the process closes the generation. What is read is at most :data:`MEMORY_SHARE`
of the memory available (more and the page cache would only evict something else); when the
files are more than that, the ones every search reads come first (:func:`_order`): the graphs,
payload indexes, payloads and id trackers, then the :data:`~.base.FUSED` vector's originals (the
graph walk of every ``find_similar`` and the rescoring of an int8 search read them), then the
other named vectors' originals, smallest first, and the int8 copies last (the engine holds them
in its own memory: ``always_ram``). The write-ahead log is not read: the engine replays it when it
opens the shard, before this starts, and no search reads it. A file that does not fit in what is
left of the budget is skipped, not cut.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .base import FUSED

logger = logging.getLogger(__name__)

#: the most of the available memory (``MemAvailable``, or what the cgroup still allows) an
#: index's files may take to be preloaded: 13.6 GB of a 1M float32 index on a 24 GiB host fits
MEMORY_SHARE = 0.8
CHUNK = 1 << 24

_started: set[str] = set()
_started_lock = threading.Lock()


def available_mb() -> float:
    """``MemAvailable`` from /proc/meminfo, capped by the cgroup's (v2) limit less its usage; 0
    where neither is known (nothing is preloaded)."""
    available = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return 0.0
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, max(0, int(limit) - used) / 2**20)
    except (OSError, ValueError):
        pass
    return available


def _files(folder: Path) -> list[Path]:
    """The files under ``folder`` but the write-ahead log (``os.walk`` skips what vanishes
    meanwhile: the engine replaces segments, a rebuild sweeps old generations)."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "wal"]
        files += [Path(root) / name for name in names]
    return files


def _vectors_of(path: Path) -> tuple[str, bool] | None:
    """``(named vector, int8 copy)`` for a file of a named vector's storage
    (``vector_storage-<name>/``), else None. Its deletion flags are not vectors."""
    for part in path.parts[:-1]:
        if part.startswith("vector_storage-"):
            if "deleted" in path.parts or path.name.startswith("deleted"):
                return None
            return part.removeprefix("vector_storage-"), path.name.startswith("quantized")
    return None


def _order(files: list[Path]) -> list[Path]:
    """``files`` in the order :func:`preload` reads them (see the module docstring)."""
    sizes = {f: _size(f) for f in files}
    per_vector: dict[str, int] = {}
    for f in files:
        kind = _vectors_of(f)
        if kind and not kind[1]:
            per_vector[kind[0]] = per_vector.get(kind[0], 0) + sizes[f]

    def rank(f: Path) -> tuple[int, int, str]:
        kind = _vectors_of(f)
        if kind is None:
            return (0, 0, str(f))
        name, quantized = kind
        if quantized:
            return (3, 0, str(f))
        return (1, 0, str(f)) if name == FUSED else (2, per_vector[name], str(f))

    return sorted(files, key=rank)


def preload(folder: Path, *, share: float = MEMORY_SHARE, stop: threading.Event | None = None) -> dict[str, Any]:
    """Read the files under ``folder`` once, in :func:`_order`, as many as fit in ``share`` of the
    available memory, until ``stop`` is set. Returns what it did: ``preloaded`` (something was
    read), ``complete`` (every file, not stopped), ``files_mb``, ``read_mb``, ``skipped_mb``,
    ``seconds``; with nothing to read (no memory known, nothing fits) only ``preloaded`` false,
    ``files_mb`` and ``memory_available_mb``."""
    files = _order(_files(Path(folder)))
    size_mb = sum(_size(f) for f in files) / 2**20
    memory = available_mb()
    budget = share * memory * 2**20
    if budget <= 0 or not any(0 < _size(f) <= budget for f in files):
        return {"preloaded": False, "files_mb": size_mb, "memory_available_mb": memory}
    started, read, skipped, missed = time.perf_counter(), 0, 0, 0
    buffer = bytearray(CHUNK)
    for path in files:
        if stop is not None and stop.is_set():
            break
        size = _size(path)
        if read + size > budget:
            skipped += size
            continue
        try:
            with open(path, "rb", buffering=0) as fh:
                while (n := fh.readinto(buffer)) and not (stop is not None and stop.is_set()):
                    read += n
        except OSError:  # a file replaced by the engine meanwhile: nothing to warm
            missed += 1
    stopped = bool(stop is not None and stop.is_set())
    return {"preloaded": read > 0, "complete": skipped == 0 and missed == 0 and not stopped,
            "files_mb": size_mb, "read_mb": read / 2**20, "skipped_mb": skipped / 2**20,
            "memory_available_mb": memory, "seconds": time.perf_counter() - started, "stopped": stopped}


def preload_in_background(folder: Path, stop: threading.Event) -> threading.Thread | None:
    """:func:`preload` in a daemon thread, once per folder per process; logs what it did.
    None when this process has read (or is reading) ``folder`` already."""
    key = str(Path(folder).resolve())
    with _started_lock:
        if key in _started:
            return None
        _started.add(key)

    def run() -> None:
        try:
            done = preload(folder, stop=stop)
        except Exception:  # noqa: BLE001 - warming a cache must never hurt the process
            logger.debug("could not preload %s", folder, exc_info=True)
            return
        if done["preloaded"]:
            logger.info("preloaded %s: %.0f MB in %.1f s%s%s", Path(folder).name, done["read_mb"], done["seconds"],
                        f" ({done['skipped_mb']:.0f} MB left out: more than the memory available)"
                        if done["skipped_mb"] else "",
                        " (stopped: the generation was closed)" if done["stopped"] else "")
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
