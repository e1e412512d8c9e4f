"""Filtered searches three ways, paired: the graph walked with ``HNSW_EF_FILTERED`` 128 (what
the index did before), the graph with 512, and the default (exact when the filter leaves at
most ``EXACT_FILTER_KB`` of vectors, else the graph with 4 x ``HNSW_EF``). Each query runs all
three, in rotating order, in one process on one kept index (``python -m bench.scale --keep``),
so a change of load during the run favours none. Reports recall@10 against exact fusion and
latency for "category 7 and in stock" and the ten-category filter of ``bench.scale``.

    python -m bench.scale_filtered_ef --reuse var/bench-scale/scale-edge-100000-int8 \\
        --size 100000 --quantization int8 --on-disk --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import scale


def run(args: argparse.Namespace) -> dict[str, Any]:
    from similarity.conf import IndexSettings
    from similarity.index.base import FusedQuery
    from similarity.index.edge import QdrantEdgeIndex

    data = np.load(args.centres)
    points = scale.Points({name: data[name].astype(np.float32) for name in ("image", "text")},
                         data["labels"] if "labels" in data.files else None)
    rows = np.sort(np.random.default_rng(5).choice(args.size, args.queries, replace=False))
    index = QdrantEdgeIndex(path=str(args.reuse), collection="scale",
                            tuning=IndexSettings(quantization=args.quantization, on_disk=args.on_disk,
                                                 optimize_after=0))
    stored = index.retrieve([scale.point_id(int(r)) for r in rows], with_vectors=True)
    vectors = [stored[scale.point_id(int(r))].vectors for r in rows]
    queries = {name: np.asarray([v[name] for v in vectors], dtype=np.float32) for name in scale.WEIGHTS}
    modes = {f"graph_ef{args.ef[0]}": {"hnsw_ef_filtered": args.ef[0], "exact_filter_kb": 0},
             f"graph_ef{args.ef[1]}": {"hnsw_ef_filtered": args.ef[1], "exact_filter_kb": 0},
             "default": {"hnsw_ef_filtered": 0, "exact_filter_kb": IndexSettings().exact_filter_kb}}
    names = list(modes)
    out: dict[str, Any] = {"load_average_at_start": os.getloadavg(), "modes": modes}
    for name, match, _acorn in scale.FILTERS:
        if name not in ("filtered", "filtered_wide"):
            continue
        exact = scale.exact_top(points, args.size, queries, rows, match)
        latency: dict[str, list[float]] = {mode: [] for mode in names}
        recall: dict[str, list[float]] = {mode: [] for mode in names}
        for i, (r, v, truth) in enumerate(zip(rows, vectors, exact, strict=True)):
            flt = scale.query_filter(match, stored[scale.point_id(int(r))], exclude=scale.point_id(int(r)),
                                     far=points.far)
            for mode in names[i % 3:] + names[:i % 3]:
                index.tuning = replace(index.tuning, **modes[mode])
                begin = time.perf_counter()
                hits = index.query_fused(FusedQuery(vectors=v, weights=scale.WEIGHTS, fetch=scale.FETCH, limit=10,
                                                    filter=flt, group_by="group", payload_fields=("pk", "group")))
                latency[mode].append(time.perf_counter() - begin)
                found = {int(h.payload["pk"]) - 1 for h in hits}
                recall[mode].append(len(found & set(truth)) / len(truth) if truth else 1.0)
        out[name] = {mode: {**scale._percentiles(latency[mode]), "recall@10": float(np.mean(recall[mode]))}
                     for mode in names}
        for mode in names[1:]:  # each mode's time over the first's, query by query
            ratio = np.asarray(latency[mode]) / np.asarray(latency[names[0]])
            out[name][mode]["paired_p50_ratio"] = float(np.median(ratio))
    index.close()
    out.update({"load_average_at_end": os.getloadavg(), "queries": len(rows), "size": args.size,
                "quantization": args.quantization or "none", "on_disk": args.on_disk})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_filtered_ef")
    parser.add_argument("--reuse", type=Path, required=True, help="an index folder kept by bench.scale --keep")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--centres", type=Path, default=None,
                        help="the .npz bench.scale used (default: the cached one)")
    parser.add_argument("--quantization", default="", choices=("", "int8"))
    parser.add_argument("--on-disk", action="store_true")
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--ef", type=int, nargs=2, default=[128, 512],
                        help="the two HNSW_EF_FILTERED values of the graph-only modes")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.centres is None:
        found = sorted((scale.ROOT / "var" / "bench-cache").glob("real-vectors-*.npz"), key=lambda p: p.stat().st_mtime)
        if not found:
            parser.error("no cached real vectors: run python -m bench --only scale first")
        args.centres = found[-1]
    sys.path.insert(0, str(scale.ROOT))
    result = run(args)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
