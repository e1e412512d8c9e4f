"""Building a Qdrant Edge shard's HNSW graphs while the process that serves it keeps answering.

qdrant-edge's ``optimize()`` holds the Python GIL while it runs (measured: no other thread of the
process ran for the 57 s of a 15k-point optimise), so it never runs in the serving process:

- :func:`optimize_in_child` optimises a shard directory nobody has open (a rebuild's new
  generation) in a child process (``python -m similarity.index.edge_optimize DIR``), which takes
  the shard's lock like any other process;
- :func:`reoptimize_live` keeps the *live* index indexed once enough unindexed points piled up:
  it copies the live points (vectors included, no encoder runs) into a new generation, page by
  page under the index lock so readers interleave; optimises that copy in a child; then, under
  the lock, re-applies every point written meanwhile (the index journals their ids) and switches
  the pointer. Readers keep the old generation until the switch and never see a gap.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import IndexUnavailable
from .shard_lock import ShardLock

if TYPE_CHECKING:
    from .edge import QdrantEdgeIndex

logger = logging.getLogger(__name__)
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


#: a child optimising longer than this is stopped (measured: 1M points took 30 min on 2 cores)
OPTIMIZE_TIMEOUT = 6 * 3600.0


def optimize_in_child(shard_dir: Path, *, lock_timeout: float = 10.0,
                      timeout: float = OPTIMIZE_TIMEOUT) -> dict[str, Any]:
    """Optimise ``shard_dir`` in a child process; its report (``changed``, ``seconds``,
    ``indexed_vectors``, ``peak_rss_mb``). The caller must not hold the shard open."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))}
    try:
        run = subprocess.run(
            [sys.executable, "-m", "similarity.index.edge_optimize", str(shard_dir), "--lock-timeout",
             str(lock_timeout)],
            capture_output=True, text=True, env=env, timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise IndexUnavailable(f"optimising {shard_dir} failed: no answer within {timeout:.0f} s") from exc
    if run.returncode != 0:
        reason = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise IndexUnavailable(f"optimising {shard_dir} failed: {reason}")
    report: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    logger.info("optimised %s in a child process: %s", shard_dir, report)
    return report


def reoptimize_live(index: QdrantEdgeIndex) -> bool:
    """Re-optimise ``index``'s live generation as described above; False when another one is
    running, or a rebuild switched the live generation meanwhile (its own optimise covers it)."""
    if not index.dims:  # never ensured in this process: its vector names are unknown here
        logger.warning("not re-optimising %s: ensure() was not called in this process", index.collection)
        return False
    if not index.begin_compaction():
        return False
    target = None
    try:
        live = index.generation
        target = index.start_rebuild(index.dims, index.payload_schema)
        for page in index.scroll_with_vectors(batch_size=256):
            target.upsert(page)
        target.close()
        optimize_in_child(target.root / target.generation, lock_timeout=index.lock_timeout)
        with index.lock:
            if index.generation != live:
                index.abandon_rebuild(target.generation)
                return False
            written = index.end_journal()
            if written:
                current = index.retrieve(sorted(written), with_vectors=True)
                target.upsert(list(current.values()))
                target.delete(sorted(written - current.keys()))
            # only if no other process (a rebuild) switched meanwhile; no sweep: an unlocked
            # folder may be a rebuild's generation waiting for its switch
            if not index.finish_rebuild(target, expect=live, sweep=False):
                index.abandon_rebuild(target.generation)
                return False
        if index._retired and index._retired not in (live, target.generation):
            index.abandon_rebuild(index._retired)  # the copy the previous re-optimise replaced
        index._retired = live
        return True
    except BaseException:
        if target is not None:
            try:
                target.close()
            finally:
                index.abandon_rebuild(target.generation)
        raise
    finally:
        index.end_compaction()


def stats_path(root: Path, collection: str) -> Path:
    return root / f"{collection}.stats.json"


def write_stats(index: QdrantEdgeIndex, *, unindexed: int | None = None) -> dict[str, Any]:
    """Record the live generation's size beside its pointer (read by the system check
    ``similarity.W012`` and the sizing advice without opening the shard, which only one process
    may do)."""
    with index.lock:
        points = index.count()
        stats = {
            "generation": index.generation, "points": points, "indexed_vectors": index.indexed_vectors(),
            "unindexed_vectors": index.unindexed_vectors() if unindexed is None else unindexed,
            "quantization": index.tuning.quantization or "none", "on_disk": index.tuning.on_disk,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    path = stats_path(index.root, index.collection)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(json.dumps(stats))
    os.replace(tmp, path)
    return stats


def start_background_reoptimize(index: QdrantEdgeIndex) -> threading.Thread:
    def run() -> None:
        started = time.perf_counter()
        try:
            if reoptimize_live(index):
                logger.info("re-optimised %s in %.1f s", index.collection, time.perf_counter() - started)
        except Exception:
            logger.exception("re-optimising %s failed; the live generation is unchanged", index.collection)

    thread = threading.Thread(target=run, name=f"similarity-optimize-{index.collection}", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m similarity.index.edge_optimize")
    parser.add_argument("shard", type=Path)
    parser.add_argument("--lock-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    from qdrant_edge import EdgeShard

    lock = ShardLock(args.shard)
    lock.acquire(args.lock_timeout)  # never load a shard without holding its lock
    try:
        shard = EdgeShard.load(str(args.shard))
        started = time.perf_counter()
        changed = bool(shard.optimize())
        seconds = time.perf_counter() - started
        shard.flush()
        indexed = int(shard.info().indexed_vectors_count)
        shard.close()
    finally:
        lock.release()
    peak = next((int(line.split()[1]) / 1024 for line in Path("/proc/self/status").read_text().splitlines()
                 if line.startswith("VmHWM:")), None) if Path("/proc/self/status").exists() else None
    print(json.dumps({"changed": changed, "seconds": round(seconds, 3), "indexed_vectors": indexed,
                      "peak_rss_mb": peak}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
