"""Where a filtered ``find_similar`` spends its time on a kept scale index: the whole
``query_fused`` against the engine's fused request alone, scored exactly (``exact=True``: every
passing float32 original) or left to the engine's planner (with int8: a scan of the int8 copy,
rescored with the originals), for "category 7 and in stock" and the ten-category filter of
``bench.scale``. One process, the index's files read first (as many as fit: ``preload``), the
same queries for every row; the index opened with ``--exact-filter-kb`` (default 100,000, as the
figures in docs/benchmarks.md were built).

    python -m bench.scale_profile --reuse var/bench-scale/scale-edge-100000-f32 --size 100000 \\
        [--quantization int8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import scale

FILTERS: dict[str, dict[str, Any]] = {"category_7": {"category_ids": 7, "in_stock": True},
           "ten_categories": {"category_ids": list(range(7, 17)), "in_stock": True}}


def _timed(points: list[Any], call: Callable[[Any], object], warm: int) -> dict[str, float]:
    samples = []
    for n, point in enumerate(points):
        begin = time.perf_counter()
        call(point)
        if n >= warm:
            samples.append((time.perf_counter() - begin) * 1000)
    return {"p50_ms": statistics.median(samples), "p99_ms": float(np.percentile(samples, 99)), "n": len(samples)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from qdrant_edge import CountRequest, QuantizationSearchParams, SearchParams

    from similarity.conf import IndexSettings
    from similarity.index import edge_fused
    from similarity.index.base import FusedQuery, fused_query_vector, with_margin
    from similarity.index.edge import QdrantEdgeIndex
    from similarity.index.preload import preload

    index = QdrantEdgeIndex(path=str(args.reuse), collection="scale",
                            tuning=IndexSettings(quantization=args.quantization, on_disk=args.on_disk,
                                                 optimize_after=0, preload=False,
                                                 exact_filter_kb=args.exact_filter_kb))
    cached = preload(Path(args.reuse))
    rows = np.random.default_rng(5).choice(args.size, args.queries + args.warm, replace=False)
    stored = list(index.retrieve([scale.point_id(int(r)) for r in rows], with_vectors=True).values())
    out: dict[str, Any] = {}
    for name, match in FILTERS.items():
        def request(point: Any, match: dict[str, Any] = match) -> FusedQuery:
            return FusedQuery(vectors=point.vectors, weights=scale.WEIGHTS, fetch=scale.FETCH, limit=10,
                              filter=scale.query_filter(match, point, exclude=point.id), group_by="group",
                              payload_fields=("pk", "group"))

        def engine(point: Any, exact: bool) -> object:
            query = request(point)
            rows = with_margin(query.limit) * 4  # one per group, as query_fused asks
            params = SearchParams(exact=exact, hnsw_ef=index.tuning.search_ef(filtered=True),
                                  quantization=QuantizationSearchParams(rescore=True) if args.quantization else None)
            per_part = edge_fused._per_part(index, query, rows, params)  # what query_fused asks each part for
            vector = fused_query_vector(query)
            assert vector is not None  # both parts weighted
            return index.run_query(edge_fused.fused_vector_request(
                query, vector, rows=rows, search_filter=query.filter, params=params,
                per_part=per_part))

        passing = index._get().count(CountRequest(exact=True, filter=edge_fused.to_edge_filter(
            scale.query_filter(match, stored[0]))))
        out[name] = {
            "points": int(passing),
            "query_fused": _timed(stored, lambda p: index.query_fused(request(p)), args.warm),
            "engine_exact": _timed(stored, lambda p: engine(p, True), args.warm),
            **({"engine_planner_int8": _timed(stored, lambda p: engine(p, False), args.warm)}
               if args.quantization else {}),
        }
    return {"profile": out, "index_files_cached": cached.get("complete", False),
            "index_files_cached_mb": cached.get("read_mb", 0.0),
            "quantization": args.quantization or "none", "on_disk": args.on_disk,
            "exact_filter_kb": args.exact_filter_kb, "size": args.size, "queries": args.queries,
            "load_average": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse", type=Path, required=True, help="a kept index (bench.scale --keep)")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--quantization", choices=["int8"], default=None)
    parser.add_argument("--on-disk", action="store_true")
    parser.add_argument("--exact-filter-kb", type=int, default=100_000,
                        help="the limit the index was built for (bench.scale --exact-filter-kb); the "
                             "planner's int8 scan needs the filter under half its build threshold")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--warm", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    for name, rows in result["profile"].items():
        print(f"{name} ({rows['points']} points)")
        for row, t in rows.items():
            if isinstance(t, dict):
                print(f"  {row:22s} p50 {t['p50_ms']:6.2f}  p99 {t['p99_ms']:6.2f} ms")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
