"""Filtered searches with two ``HNSW_EF_FILTERED`` values, paired: each query runs with both, in
alternating order, in one process on one kept index (``python -m bench.scale --keep``), so a
change of load during the run does not favour either. Reports recall@10 against exact fusion
and latency for "category 7 and in stock" and the ten-category filter of ``bench.scale``.

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
    from similarity.index.base import FusedQuery, SearchFilter
    from similarity.index.edge import QdrantEdgeIndex

    data = np.load(args.centres)
    points = scale.Points({name: data[name].astype(np.float32) for name in ("image", "text")})
    rows = np.sort(np.random.default_rng(5).choice(args.size, args.queries, replace=False))
    index = QdrantEdgeIndex(path=str(args.reuse), collection="scale",
                            tuning=IndexSettings(quantization=args.quantization, on_disk=args.on_disk,
                                                 optimize_after=0))
    stored = index.retrieve([scale.point_id(int(r)) for r in rows], with_vectors=True)
    vectors = [stored[scale.point_id(int(r))].vectors for r in rows]
    queries = {name: np.asarray([v[name] for v in vectors], dtype=np.float32) for name in scale.WEIGHTS}
    efs = args.ef
    out: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    for name, match, _acorn in scale.FILTERS:
        if name not in ("filtered", "filtered_wide"):
            continue
        exact = scale.exact_top(points, args.size, queries, rows, match)
        latency: dict[int, list[float]] = {ef: [] for ef in efs}
        recall: dict[int, list[float]] = {ef: [] for ef in efs}
        for i, (r, v, truth) in enumerate(zip(rows, vectors, exact, strict=True)):
            flt = SearchFilter(match={k: x for k, x in match.items() if not isinstance(x, list)},
                               match_any={k: x for k, x in match.items() if isinstance(x, list)},
                               exclude_ids=frozenset({scale.point_id(int(r))}))
            for ef in (efs if i % 2 == 0 else efs[::-1]):
                index.tuning = replace(index.tuning, hnsw_ef_filtered=ef)
                begin = time.perf_counter()
                hits = index.query_fused(FusedQuery(vectors=v, weights=scale.WEIGHTS, fetch=scale.FETCH, limit=10,
                                                    filter=flt, group_by="group", payload_fields=("pk", "group")))
                latency[ef].append(time.perf_counter() - begin)
                found = {int(h.payload["pk"]) - 1 for h in hits}
                recall[ef].append(len(found & set(truth)) / max(len(truth), 1))
        out[name] = {str(ef): {**scale._percentiles(latency[ef]), "recall@10": float(np.mean(recall[ef]))}
                     for ef in efs}
        ratio = np.asarray(latency[efs[1]]) / np.asarray(latency[efs[0]])
        out[name][f"paired_p50_ratio_{efs[1]}_over_{efs[0]}"] = float(np.median(ratio))
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
    parser.add_argument("--ef", type=int, nargs=2, default=[128, 512], help="the two HNSW_EF_FILTERED values")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.centres is None:
        found = sorted((scale.ROOT / "var" / "bench-cache").glob("real-vectors-*.npz"))
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
