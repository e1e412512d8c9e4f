"""Smoke run of the benchmark suite (`python -m bench --quick`): every section reports numbers
(the Celery section, which starts a worker, is left to the real runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings


@pytest.mark.slow
def test_quick_bench_writes_json_and_charts(flipkart: Path, tmp_path: Path):
    root = Path(settings.BASE_DIR)
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--device", "cpu", "--out", str(tmp_path),
         "--only", "encode,reindex,upsert,find_similar,scale,page,freshness"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "bench-quick-cpu-encode-reindex-upsert-find_similar-scale-page-freshness.json")
                         .read_text())
    assert results["machine"]["torch_device"] == "cpu"
    assert results["encode"]["texts_per_s_batched"] > 0 and results["encode"]["images_per_s_naive"] > 0
    assert results["reindex"]["reindex_all_products_per_s"] > 0
    assert results["find_similar"]["no_filter"]["p99_ms"] >= results["find_similar"]["no_filter"]["p50_ms"]
    assert results["upsert"]["edge_points_per_s"] > 0
    scale = results["scale"]["2000"]
    assert scale["build_seconds"] >= scale["optimize_seconds"] > 0 and scale["disk_mb"] > 0
    assert 0.0 <= scale["recall@10"]["no_filter"] <= 1.0 and scale["full_scan"]["no_filter"]["n"] == 20
    assert results["page"]["cold_cache"]["n"] == 5
    assert results["freshness"]["embedded"]["n"] == 3
    assert {p.name for p in tmp_path.glob("*.png")} == {"encode_throughput.png", "latency_by_size.png"}
    assert "texts/s" in run.stdout and "find_similar" in run.stdout
