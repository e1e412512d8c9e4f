"""The vector index at shop scale: ``python -m bench --only scale --scale 100000,1000000``.

Points are made from **real catalog vectors**: flipkart-1050's own image and text embeddings
(encoded once by the project's encoders, cached under the bench's work folder). Each synthetic
product is a real product's vector, mixed with a second real product's (a share drawn from 0 to
0.3) plus Gaussian noise of norm about 0.5, in both modalities with the same two products: so the
index holds about a thousand real "product types", each with many near variants, as a shop does.

Each (size, quantisation) runs in a child process of its own (``python -m bench.scale``), so its
peak memory is its own. Per run: fill and optimise (HNSW) times, ``find_similar``'s vector side as
one request (``VectorIndex.query_fused``) without and with filters (p50/p95/p99), recall@10 of its
top 10 against an exact brute-force fused ranking over all points (numpy, same weights, same
filters), the same queries through the previous five-round-trip path (per-modality queries plus
id-restricted rescoring, the naive baseline) for the ratio, peak RAM and disk. The filtered
queries run twice: plain HNSW, and with ACORN (``INDEX["ACORN"]``: a filter that leaves few points
is searched through neighbours' neighbours too). Two kinds of category: ``category_ids``, made up
(a product type's number mod 60: each category is some 17 types scattered over the space, the
hard case for a graph), and ``real_category``, flipkart's own level-2 category of the point's main
product type (a region of the space, as a shop's categories are). Before the queries the index's files are read
once into the page cache (a serving process's steady state; ``--cold`` leaves them out, see
:func:`cache_files`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = {"image": 0.3, "text": 0.7}
CHUNK = 2000
FETCH = 100
#: untimed queries of other points before the timed ones (see :func:`warm_up`)
WARM_UP = 100
SCHEMA = {"pk": "keyword", "group": "keyword", "model": "keyword", "category_ids": "integer", "in_stock": "bool",
          "real_category": "integer"}
#: a filter value: the query point's own category (of the field filtered)
OWN = "own"
#: a filter value of ``real_category``: a real level-2 category of median size (see :class:`Points`)
FAR = "far"
FILTERS: tuple[tuple[str, dict[str, Any], bool], ...] = (  # (name, filter, ACORN)
    ("no_filter", {}, False), ("filtered", {"category_ids": 7, "in_stock": True}, False),
    ("filtered_acorn", {"category_ids": 7, "in_stock": True}, True),
    # ten categories (a sixth of the points, in stock): more points than the full-scan threshold at
    # any size, so this one is always a filtered walk of the graph
    ("filtered_wide", {"category_ids": list(range(7, 17)), "in_stock": True}, False),
    # the query's own category and in stock: what a "same category" widget asks (find_similar's
    # same_category). As selective as category 7 (1.3% of the points), but around the query,
    # where category 7 is, for most queries, a far corner of the space
    ("own_category", {"category_ids": OWN, "in_stock": True}, False),
    # ``category_ids`` above is made up: product type mod 60, so each "category" is about 17 product
    # types scattered over the space. A shop's real categories are regions of it: ``real_category``
    # is the level-2 flipkart category of each point's main product type. One real category (of median
    # size: far from most queries, as category 7 is) and the query's own one
    ("real_category", {"real_category": FAR, "in_stock": True}, False),
    ("own_real_category", {"real_category": OWN, "in_stock": True}, False),
)


# ---------------------------------------------------------------------------------------------
# Real vectors (parent process, with Django)
# ---------------------------------------------------------------------------------------------
def real_vectors(products: list[Any], cache: Path) -> Path:
    """flipkart-1050's image and text vectors (products with an image) and each one's level-2
    category (``labels``: an index into the sorted level-2 paths; -1 = none), cached as .npz."""
    from similarity import registry
    from similarity.encoders.image_decoding import open_image

    spec = registry.get_spec()
    text, image = registry.text_encoder(), registry.image_encoder()
    key = hashlib.sha1(f"{text.version}|{image.version}|{len(products)}|labels".encode(), usedforsecurity=False)
    path = cache / f"real-vectors-{key.hexdigest()[:12]}.npz"
    if path.is_file():
        return path
    texts, images, paths = [], [], []
    for product in products:
        sources = spec.get_images(product)
        if not sources:
            continue
        with sources[0].open() as fh:
            images.append(open_image(fh, name=sources[0].name, max_pixels=40_000_000))
        texts.append(spec.get_text(product))
        paths.append(" > ".join(spec.get_taxonomy(product)[:2]))
    names = sorted({p for p in paths if p})
    vectors = {"image": np.concatenate([image.encode(images[i:i + 32]) for i in range(0, len(images), 32)]),
               "text": np.concatenate([text.encode(texts[i:i + 64]) for i in range(0, len(texts), 64)])}
    labels = np.asarray([names.index(p) if p else -1 for p in paths], dtype=np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **vectors, labels=labels)
    return path


def bench_scale(products: list[Any], sizes: list[int], workdir: Path, n_queries: int,
                variants: list[str]) -> dict[str, Any]:
    """One child process per (size, variant); ``variants``: ``f32``, ``int8`` (scalar
    quantisation, originals in RAM for rescoring), ``int8+disk`` (originals memory-mapped).
    Their JSON merged as ``{size: {no_filter, filtered, recall@10, build_seconds, ram_mb,
    disk_mb, ..., "int8": {...}}}`` (the first variant at the top level of each size)."""
    centres = real_vectors(products, ROOT / "var" / "bench-cache")
    out: dict[str, Any] = {}
    for size in sorted(sizes):
        for variant in variants:
            report = workdir / f"scale-{size}-{variant}.json"
            command = [sys.executable, "-m", "bench.scale", "--size", str(size), "--centres", str(centres),
                       "--queries", str(n_queries), "--workdir", str(workdir), "--json", str(report)]
            if variant.startswith("int8"):
                command += ["--quantization", "int8"]
            if variant.endswith("+disk"):
                command += ["--on-disk"]
            run = subprocess.run(command, cwd=ROOT, text=True, capture_output=True)
            if run.returncode != 0:
                row: dict[str, Any] = {"error": (run.stderr.strip().splitlines() or ["no output"])[-1]}
            else:
                row = json.loads(report.read_text())
            print(f"[scale {size} {variant}: {json.dumps(row)[:300]}]", file=sys.stderr)
            if str(size) not in out:
                out[str(size)] = row
            else:
                out[str(size)][variant] = row
    return out


# ---------------------------------------------------------------------------------------------
# The child: one index of one size
# ---------------------------------------------------------------------------------------------
class Points:
    """Deterministic synthetic products from the real vectors: chunk ``c`` is always the same."""

    def __init__(self, centres: dict[str, np.ndarray], labels: np.ndarray | None = None) -> None:
        self.centres = centres
        self.n_real = len(next(iter(centres.values())))
        #: each real product's level-2 category (a cache from before labels: all -1)
        self.labels = labels if labels is not None else np.full(self.n_real, -1, dtype=np.int64)
        # a typical real category: the one of median size among those with products (ties: the
        # first); on flipkart-1050, 7 of 1,047 products. -1: no labels (the real filters are left out)
        sizes = np.bincount(self.labels[self.labels >= 0])
        present = np.flatnonzero(sizes)
        self.far = int(present[np.argsort(sizes[present], kind="stable")[len(present) // 2]]) if len(present) else -1

    def filters(self) -> tuple[tuple[str, dict[str, Any], bool], ...]:
        """:data:`FILTERS`, without those of ``real_category`` when there are no labels."""
        return tuple(f for f in FILTERS if self.far >= 0 or "real_category" not in f[1])

    def resolve(self, match: dict[str, Any]) -> dict[str, Any]:
        """``match`` with :data:`FAR` replaced by its category."""
        return {k: (self.far if v == FAR else v) for k, v in match.items()}

    def chunk(self, start: int, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Vectors and the payload fields the filters read (``category_ids``, ``in_stock``,
        ``real_category``) of points ``start`` to ``start + n``."""
        rng = np.random.default_rng(start + 7)
        first = rng.integers(0, self.n_real, n)
        second = rng.integers(0, self.n_real, n)
        share = rng.uniform(0, 0.3, n).astype(np.float32)[:, None]
        vectors = {}
        for name, real in self.centres.items():
            d = real.shape[1]
            v = (1 - share) * real[first] + share * real[second]
            v += rng.standard_normal((n, d)).astype(np.float32) * np.float32(0.5 / np.sqrt(d))
            vectors[name] = v / np.linalg.norm(v, axis=1, keepdims=True)
        category = (first % 60).astype(np.int64)
        in_stock = rng.random(n) < 0.8
        return vectors, {"category_ids": category, "in_stock": in_stock, "real_category": self.labels[first]}


def memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc (``ru_maxrss`` would carry
    the parent's peak across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def point_id(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def fill(index: Any, points: Points, size: int) -> None:
    from similarity.index.base import PointData

    for start in range(0, size, CHUNK):
        n = min(CHUNK, size - start)
        vectors, fields = points.chunk(start, n)
        lists = {name: v.tolist() for name, v in vectors.items()}
        index.upsert([
            PointData(point_id(start + k), {name: lists[name][k] for name in lists},
                      {"pk": str(start + k + 1), "group": str(start + k + 1),
                       "category_ids": [int(fields["category_ids"][k])], "in_stock": bool(fields["in_stock"][k]),
                       "real_category": int(fields["real_category"][k]), "model": "bench.synthetic"})
            for k in range(n)
        ])


def exact_top(points: Points, size: int, queries: dict[str, np.ndarray], query_rows: np.ndarray,
              match: dict[str, Any], k: int = 10, own: dict[str, np.ndarray] | None = None) -> list[list[int]]:
    """Brute force: every point's fused score for every query, the best ``k`` (row numbers).
    ``own``: each query's value of a field, for a filter on :data:`OWN`."""
    match = points.resolve(match)
    best_scores = np.full((len(query_rows), 0), -np.inf)
    best_rows = np.zeros((len(query_rows), 0), dtype=np.int64)
    total = sum(WEIGHTS.values())
    for start in range(0, size, CHUNK * 5):
        n = min(CHUNK * 5, size - start)
        vectors, fields = _chunks(points, start, n)
        fused = sum(WEIGHTS[name] * (queries[name] @ vectors[name].T) for name in WEIGHTS) / total
        allowed = np.ones(n, dtype=bool)
        allowed &= passes(fields, match)
        fused[:, ~allowed] = -np.inf
        for field, value in match.items():
            if value == OWN:
                assert own is not None
                fused[fields[field][None, :] != own[field][:, None]] = -np.inf
        rows = np.arange(start, start + n)
        fused[(query_rows[:, None] == rows[None, :])] = -np.inf  # never the query itself
        scores = np.concatenate([best_scores, fused], axis=1)
        ids = np.concatenate([best_rows, np.broadcast_to(rows, fused.shape)], axis=1)
        keep = np.argsort(-scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, keep, axis=1)
        best_rows = np.take_along_axis(ids, keep, axis=1)
    return [[int(r) for r, s in zip(rows, scores, strict=True) if np.isfinite(s)]
            for rows, scores in zip(best_rows, best_scores, strict=True)]


def _chunks(points: Points, start: int, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    parts = [points.chunk(s, min(CHUNK, start + n - s)) for s in range(start, start + n, CHUNK)]
    vectors = {name: np.concatenate([p[0][name] for p in parts]) for name in WEIGHTS}
    return vectors, {field: np.concatenate([p[1][field] for p in parts]) for field in parts[0][1]}


def passes(fields: dict[str, np.ndarray], match: dict[str, Any]) -> np.ndarray:
    """Which points pass ``match`` (a resolved filter; :data:`OWN` conditions are left to the
    caller): a value matches equal values, a list any of them."""
    allowed = np.ones(len(fields["in_stock"]), dtype=bool)
    for field, value in match.items():
        if value != OWN:
            allowed &= np.isin(fields[field], value)
    return allowed


def filter_counts(points: Points, size: int, matches: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many points pass each of ``matches`` (filters without :data:`OWN`), in one pass."""
    resolved = {name: points.resolve(match) for name, match in matches.items()}
    counts = dict.fromkeys(matches, 0)
    for start in range(0, size, CHUNK * 5):
        _vectors, fields = _chunks(points, start, min(CHUNK * 5, size - start))
        for name, match in resolved.items():
            counts[name] += int(passes(fields, match).sum())
    return counts


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "n": len(samples)}


def five_round_trips(index: Any, vectors: dict[str, list[float]], search_filter: Any) -> list[str]:
    """The previous ``find_similar`` vector side, the naive baseline: one query per modality,
    then one id-restricted query per modality for the scores a candidate lacks, fused here."""
    from similarity.fusion import fuse_scores
    from similarity.index.base import SearchFilter

    scores: dict[str, dict[str, float]] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for name, vector in vectors.items():
        for hit in index.query(name, vector, limit=FETCH, filter=search_filter):
            scores.setdefault(hit.id, {})[name] = hit.score
            payloads[hit.id] = hit.payload
    for name, vector in vectors.items():
        missing = frozenset(i for i, s in scores.items() if name not in s)
        if missing:
            for hit in index.query(name, vector, limit=len(missing), filter=SearchFilter(ids=missing)):
                scores[hit.id][name] = hit.score
    ids = list(scores)
    fused = fuse_scores({m: np.array([scores[i].get(m, np.nan) for i in ids]) for m in vectors}, WEIGHTS)
    order = np.argsort(-fused)[:10]
    return [payloads[ids[j]]["pk"] for j in order]


def _raise_optimizer_priority(stop: threading.Event) -> None:
    """qdrant's HNSW builder threads run at nice 9 (they yield to queries, as a server's should).
    On a shared machine that starves them; for a build time of this machine, not of its other
    users, the threads of this process's children are set to nice 0 (needs the privilege)."""
    while not stop.wait(0.5):
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != os.getpid():
                    continue
                for task in (stat.parent / "task").iterdir():
                    if (task / "comm").read_text().startswith("hnsw") and os.getpriority(
                            os.PRIO_PROCESS, int(task.name)) > 0:
                        os.setpriority(os.PRIO_PROCESS, int(task.name), 0)
            except (OSError, ValueError, IndexError):
                continue


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    from similarity.conf import IndexSettings
    from similarity.index.edge import QdrantEdgeIndex
    from similarity.index.edge_optimize import optimize_in_child

    data = np.load(args.centres)
    points = Points({name: data[name].astype(np.float32) for name in ("image", "text")},
                    data["labels"] if "labels" in data.files else None)
    dims = {name: int(v.shape[1]) for name, v in points.centres.items()}
    typed = f"-{args.fused_datatype}" if args.fused_datatype else ""
    folder = args.reuse or Path(args.workdir) / f"scale-edge-{args.size}-{args.quantization or 'f32'}{typed}"
    if not args.reuse:
        shutil.rmtree(folder, ignore_errors=True)
    rss_start = memory_mb("VmRSS")
    index = QdrantEdgeIndex(path=str(folder), collection="scale",
                            tuning=IndexSettings(quantization=args.quantization, on_disk=args.on_disk,
                                                 optimize_after=0, preload=False,  # cache_files, or --cold
                                                 **_tuning(args)))
    index.ensure(dims, SCHEMA)
    if args.reuse:  # the queries only, on an index an earlier run kept (--keep)
        return measure(args, index, points, folder, {"reused": str(folder)})
    # the way a rebuild builds: a new generation filled, optimised (in a child process, as in
    # production), then switched in
    target = index.start_rebuild(dims, SCHEMA)
    started = time.perf_counter()
    fill(target, points, args.size)
    fill_s = time.perf_counter() - started
    target.close()
    started = time.perf_counter()
    stop = threading.Event()
    watcher = threading.Thread(target=_raise_optimizer_priority, args=(stop,), daemon=True)
    watcher.start()
    try:
        optimizer = optimize_in_child(target.root / target.generation)  # what target.optimize() runs
    finally:
        stop.set()
    optimise_s = time.perf_counter() - started
    index.finish_rebuild(target)
    index.count()  # open the optimised generation
    built = {"fill_seconds": fill_s, "optimize_seconds": optimise_s, "build_seconds": fill_s + optimise_s,
             "ram_mb": memory_mb("VmRSS") - rss_start, "optimizer_peak_rss_mb": optimizer.get("peak_rss_mb")}
    return measure(args, index, points, folder, built)


def _tuning(args: argparse.Namespace) -> dict[str, int]:
    tuning = {"indexing_threshold_kb": args.threshold_kb} if args.threshold_kb else {}
    if getattr(args, "ef", 0):
        tuning["hnsw_ef"] = args.ef
    if getattr(args, "exact_filter_kb", None) is not None:
        tuning["exact_filter_kb"] = args.exact_filter_kb
    if getattr(args, "near_ef_points", None) is not None:
        tuning["near_ef_points"] = args.near_ef_points
    if getattr(args, "fused_datatype", None):
        tuning["fused_datatype"] = args.fused_datatype
    return {**tuning, "hnsw_ef_filtered": args.ef_filtered} if args.ef_filtered else tuning


def query_filter(match: dict[str, Any], point: Any, *, exclude: str | None = None, far: int | None = None) -> Any:
    """The ``SearchFilter`` of ``match`` for the query ``point`` (:data:`OWN`: its own value of
    the field; :data:`FAR`: ``far``)."""
    from similarity.index.base import SearchFilter

    if FAR in match.values() and (far is None or far < 0):
        raise ValueError("a filter on FAR needs the real category (far) it stands for")
    concrete = {k: (_own(point, k) if v == OWN else far if v == FAR else v) for k, v in match.items()}
    return SearchFilter(match={k: v for k, v in concrete.items() if not isinstance(v, list)},
                        match_any={k: v for k, v in concrete.items() if isinstance(v, list)},
                        exclude_ids=frozenset({exclude}) if exclude else frozenset())


def _own(point: Any, field: str) -> Any:
    value = point.payload[field]
    return value[0] if isinstance(value, list) else value


def cache_files(folder: Path) -> dict[str, Any]:
    """Read the index's files once, so that the kernel's page cache holds them: the steady state
    of a serving process that has run a while, and what ``INDEX["PRELOAD"]`` does in the
    background when a process opens a generation (:mod:`similarity.index.preload`; here before the
    queries, so that none of them is timed during it). Without it the timed queries read from the
    disk: on this machine the page cache was often gone when the next run started (after the
    large runs it was dropped when their process exited), so a fresh run may start cold (1M
    points, float32 + disk: no-filter p50 15.9 ms cold, 2.7 ms with the files cached, same
    queries). At most 80% of the available memory is read, the files every search reads first
    (``index_files_cached``: true, ``"partly"`` or false; ``index_files_cached_mb``: how much)."""
    from similarity.index.preload import preload

    done = preload(folder)
    cached = (True if done["complete"] else "partly") if done["preloaded"] else False
    return {"index_files_cached": cached, "index_files_mb": done["files_mb"],
            "index_files_cached_mb": done.get("read_mb", 0.0),
            **({"cache_seconds": done["seconds"]} if done["preloaded"] else {})}


def warm_up(index: Any, rows: np.ndarray, far: int, filters: tuple[tuple[str, dict[str, Any], bool], ...],
            *, near: bool = True) -> None:
    """A serving process's steady state: other points' queries, untimed, under every filter (the
    index files were just opened or written; the first queries would time page faults)."""
    from similarity.index.base import FusedQuery

    stored = index.retrieve([point_id(int(r)) for r in rows], with_vectors=True)
    for _name, match, _acorn in filters:
        for point in stored.values():
            flt = query_filter(match, point, far=far)
            index.query_fused(FusedQuery(vectors=point.vectors, weights=WEIGHTS, fetch=FETCH, limit=10,
                                         filter=flt, group_by="group", payload_fields=("pk", "group"),
                                         near=near and OWN in match.values()))
            five_round_trips(index, point.vectors, flt)


def measure(args: argparse.Namespace, index: Any, points: Points, folder: Path, built: dict[str, Any]
            ) -> dict[str, Any]:
    """The queries: one request and the five-round-trip baseline, recall against brute force."""
    from similarity.index.base import FusedQuery

    drawn = np.random.default_rng(3).choice(args.size, args.queries + WARM_UP, replace=False)
    rows, warm_rows = np.sort(drawn[:args.queries]), drawn[args.queries:]
    cached = cache_files(folder) if not args.cold else {"index_files_cached": False}
    stored = index.retrieve([point_id(int(r)) for r in rows], with_vectors=True)
    filters = points.filters()
    if any("real_category" not in p.payload for p in stored.values()):  # a kept index from before it
        filters = tuple(f for f in filters if "real_category" not in f[1])
    warm_up(index, warm_rows, points.far, filters, near=not args.ignore_near)
    query_vectors = [stored[point_id(int(r))].vectors for r in rows]
    queries = {name: np.asarray([q[name] for q in query_vectors], dtype=np.float32) for name in WEIGHTS}
    own = {field: np.asarray([_own(stored[point_id(int(r))], field) for r in rows])
           for field in ("category_ids", "real_category") if all(field in p.payload for p in stored.values())}
    out: dict[str, Any] = {}
    recall: dict[str, float] = {}
    baseline: dict[str, Any] = {}
    exact_for: dict[str, list[list[int]]] = {}
    for name, match, acorn in filters:
        index.tuning = replace(index.tuning, acorn=acorn)
        key = json.dumps(match, sort_keys=True)
        if key not in exact_for:
            exact_for[key] = exact_top(points, args.size, queries, rows, match, own=own)
        exact = exact_for[key]
        samples, naive, found_all = [], [], []
        for r, vectors in zip(rows, query_vectors, strict=True):
            flt = query_filter(match, stored[point_id(int(r))], exclude=point_id(int(r)), far=points.far)
            near = not args.ignore_near and OWN in match.values()  # relative to the query, as find_similar's
            begin = time.perf_counter()
            hits = index.query_fused(FusedQuery(vectors=vectors, weights=WEIGHTS, fetch=FETCH, limit=10,
                                                filter=flt, group_by="group", payload_fields=("pk", "group"),
                                                near=near))
            samples.append(time.perf_counter() - begin)
            found_all.append([int(h.payload["pk"]) - 1 for h in hits])
            begin = time.perf_counter()
            five_round_trips(index, vectors, flt)
            naive.append(time.perf_counter() - begin)
        out[name] = _percentiles(samples)
        baseline[name] = _percentiles(naive)
        # a query with nothing to find (no other point passes its filter) found all of it
        recall[name] = float(np.mean([len(set(f) & set(e)) / len(e) if e else 1.0
                                      for f, e in zip(found_all, exact, strict=True)]))
    result = {
        **out, "five_round_trips": baseline, "recall@10": recall, **built,
        "indexed_vectors": index.indexed_vectors(), "points": index.count(),
        "peak_rss_mb": memory_mb("VmHWM"), "serving_rss_mb": memory_mb("VmRSS"),
        "load_average": os.getloadavg(),
        "disk_mb": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20,
        "quantization": args.quantization or "none", "on_disk": args.on_disk,
        "fused_datatype": index.fused_datatype(),
        "vectors": "flipkart-1050 real vectors, mixed pairs + noise", "real_products": points.n_real,
        "real_category_far": points.far,
        "filter_points": filter_counts(points, args.size,
                                       {name: match for name, match, _ in filters if OWN not in match.values()}),
        "weights": WEIGHTS, "fetch": FETCH, "warm_up_queries": WARM_UP, **cached,
        "hnsw_ef": index.tuning.search_ef(filtered=False),
        "hnsw_ef_filtered": index.tuning.search_ef(filtered=True),
        "indexing_threshold_kb": index.tuning.indexing_threshold_kb,
        "exact_filter_kb": index.tuning.exact_filter_kb,
        "near_hint": not args.ignore_near,
        **({} if args.ignore_near else {
            "near_rule": "filters relative to the query (its own category)",
            "near_ef_points": index.tuning.near_ef_points,
            "near_ef": index.tuning.near_ef(args.size) if index.tuning.near_ef_points > 0 else None}),
    }
    index.close()
    if not (args.keep or args.reuse):
        shutil.rmtree(folder, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--centres", type=Path, required=True, help=".npz of real image/text vectors")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quantization", default="", choices=("", "int8"))
    parser.add_argument("--on-disk", action="store_true", help="original vectors memory-mapped from disk")
    parser.add_argument("--workdir", type=Path, default=Path("var/bench-scale"))
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--keep", action="store_true", help="keep the index folder (for --reuse)")
    parser.add_argument("--reuse", type=Path, help="measure the queries on a kept index folder, no build")
    parser.add_argument("--ef", type=int, default=0,
                        help="INDEX['HNSW_EF'], the search's candidate list (0: the default); a query-time "
                             "setting, so --reuse can compare several on one index. Without --ef-filtered "
                             "the filtered searches' list follows it (4 x); below CANDIDATES (100) each part "
                             "of the fused request asks for CANDIDATES rows instead of the rows it returns")
    parser.add_argument("--cold", action="store_true",
                        help="do not read the index files into the page cache before the queries")
    parser.add_argument("--exact-filter-kb", type=int, default=None,
                        help="INDEX['EXACT_FILTER_KB'] (default: the setting's default); 0: never exact")
    parser.add_argument("--ef-filtered", type=int, default=0,
                        help="INDEX['HNSW_EF_FILTERED'] (0: the default, 4 x HNSW_EF)")
    parser.add_argument("--ignore-near", action="store_true",
                        help="never tell the index that a filter is relative to the query (its own category: "
                             "FusedQuery.near), the rule before: such a filter under EXACT_FILTER_KB is then "
                             "scored exactly, a larger one walked with HNSW_EF_FILTERED")
    parser.add_argument("--near-ef-points", type=int, default=None,
                        help="INDEX['NEAR_EF_POINTS'] (default: the setting's default): the own category is "
                             "walked with HNSW_EF up to this many points, then HNSW_EF x sqrt(points / it); "
                             "0: searched like any other filter")
    parser.add_argument("--fused-datatype", default=None, choices=("float32", "float16"),
                        help="INDEX['FUSED_DATATYPE'] for the build (default: the setting's default); "
                             "with --reuse the kept index keeps the type it was built with")
    parser.add_argument("--threshold-kb", type=int, default=0,
                        help="INDEX['INDEXING_THRESHOLD_KB'] (0: the default); a small one puts a small index's "
                             "filters in a large one's regime (the filter searched through the graph)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    result = run_child(args)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
