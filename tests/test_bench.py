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
    assert 0.0 <= scale["recall@10"]["no_filter"] <= 1.0 and scale["five_round_trips"]["no_filter"]["n"] == 20
    assert scale["points"] == 2000 and scale["indexed_vectors"] > 0  # the generation went live optimised
    assert 0.0 < scale["recall@10"]["filtered_wide"] <= 1.0 and scale["hnsw_ef_filtered"] == 4 * scale["hnsw_ef"]
    # flipkart's own level-2 categories: one of median size (a few points of 2,000), and the query's own
    assert 0 < scale["filter_points"]["real_category"] < scale["filter_points"]["filtered_wide"] < 2000
    assert scale["recall@10"]["real_category"] == scale["recall@10"]["own_real_category"] == 1.0  # exact: small
    assert results["page"]["cold_cache"]["n"] == 5
    assert results["freshness"]["embedded"]["n"] == 3
    assert {p.name for p in tmp_path.glob("*.png")} == {"encode_throughput.png", "latency_by_size.png"}
    assert "texts/s" in run.stdout and "find_similar" in run.stdout


@pytest.mark.slow
def test_gpu_sweep_smoke_runs_on_cpu(tmp_path: Path):
    """``python -m bench.gpu_sweep`` is written for an H100/H200; ``--smoke`` runs every part of
    it (model sweep, decode paths, end to end into Qdrant Edge) at tiny sizes on the CPU."""
    out = tmp_path / "sweep.json"
    run = subprocess.run([sys.executable, "-m", "bench.gpu_sweep", "--smoke", "--device", "cpu", "--out", str(out)],
                         cwd=Path(settings.BASE_DIR), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["smoke"] is True and results["device"] == "cpu"
    image_rows = results["model_only"]["image"]
    assert {(r["channels_last"], r["compile"]) for r in image_rows} == {(True, "off"), (False, "off"),
                                                                       (True, "eager"), (False, "eager")}
    assert all(r["images_per_s"] > 0 for r in image_rows) and results["model_only"]["text"]
    assert results["decode"]["torchvision_decode_jpeg_per_s"] > 0 and results["decode"]["cpu_threads"]
    assert [r["decode"] for r in results["end_to_end"]] == ["cpu", "gpu"]
    assert all(r["points_written"] == r["products"] == 8 for r in results["end_to_end"])
    assert results["model_only_ceiling_products_per_s"] > 0
    assert "end to end, cpu decode" in run.stdout


@pytest.mark.django_db
def test_behaviour_hooks_bench_reports_each_session_engine_and_beacon_mode():
    """``python -m bench --only behaviour``: the view hook per session engine and the beacon per
    counting mode, p50/p95 with the naive baselines, in one run (tiny n here)."""
    from bench.behaviour import VIEW_HOOK_SETUPS, bench_hooks, hooks_table

    results = bench_hooks(5)
    hooks = results["view_hook"]
    assert set(hooks) == set(VIEW_HOOK_SETUPS)
    for name, row in hooks.items():
        if "skipped" not in row:
            assert set(row) == {"first_view", "new_product", "reload", "reload_naive"}, name
            assert row["new_product"]["added"]["n"] == 5 and row["new_product"]["page_with_hook"]["p95_ms"] > 0
    assert "database (naive: one UPDATE per hit)" in results["beacon"]
    assert all(row["p95_ms"] >= row["p50_ms"] > 0 for row in results["beacon"].values())
    lines = hooks_table({"sqlite": results})
    assert any(line.startswith("beacon sqlite") for line in lines)


@pytest.mark.slow
def test_merchandising_bench_reports_every_phase(flipkart: Path, tmp_path: Path):
    """``python -m bench.merchandising``: what pins, blocks and rules add to a render, on vs off."""
    out = tmp_path / "merch.json"
    run = subprocess.run([sys.executable, "-m", "bench.merchandising", "--products", "24", "--sources", "3",
                          "--rounds", "2", "--workdir", str(tmp_path / "work"), "--out", str(out)],
                         cwd=Path(settings.BASE_DIR), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    merch = json.loads(out.read_text())["merchandising"]
    assert merch["sources"] == 3
    for phase in ("pins_in_list", "pin_from_beyond", "block_in_list"):
        rows = merch[phase]
        assert rows["find_similar"]["on"]["n"] == rows["find_similar"]["off"]["n"] == 6
        assert {"p50_ms", "p95_ms"} <= set(rows["widget_cache_miss"]["added"])
        work = rows["widget_cache_miss"]["work"]
        assert work["on"]["searches"] >= work["off"]["searches"] == 1
    # pins among the neighbours cost one read of the version, nothing else
    assert merch["pins_in_list"]["widget_cache_miss"]["work"]["on"]["queries"] == \
        merch["pins_in_list"]["widget_cache_miss"]["work"]["off"]["queries"] + 1
    assert "widget render, cache miss" in run.stdout


def test_filtered_ef_bench_compares_two_values_on_a_kept_index(tmp_path: Path):
    """``bench.scale --keep`` builds a small index (a tiny threshold puts its filters in the
    graph), then ``bench.scale_filtered_ef`` measures the graph at two ``HNSW_EF_FILTERED`` values
    and the default (exact for a small filter) on it."""
    import numpy as np

    root = Path(settings.BASE_DIR)
    rng = np.random.default_rng(0)
    centres = tmp_path / "centres.npz"
    np.savez(centres, image=rng.normal(size=(120, 1280)).astype(np.float32),
             text=rng.normal(size=(120, 384)).astype(np.float32))
    build = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--size", "1500", "--centres", str(centres), "--queries", "5",
         "--threshold-kb", "100", "--workdir", str(tmp_path), "--json", str(tmp_path / "build.json"), "--keep"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    built = json.loads((tmp_path / "build.json").read_text())
    assert built["indexing_threshold_kb"] == 100 and built["points"] == 1500
    # these centres carry no categories: the real-category filters are left out, not run as "in stock"
    assert "real_category" not in built["recall@10"] and "own_real_category" not in built["recall@10"]
    assert built["real_category_far"] == -1 and "real_category" not in built["filter_points"]
    run = subprocess.run(
        [sys.executable, "-m", "bench.scale_filtered_ef", "--reuse", str(tmp_path / "scale-edge-1500-f32"),
         "--size", "1500", "--centres", str(centres), "--queries", "6", "--json", str(tmp_path / "ef.json")],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "ef.json").read_text())
    for name in ("filtered", "filtered_wide"):
        assert set(report[name]) == {"graph_ef128", "graph_ef512", "default"}
        assert report[name]["graph_ef128"]["n"] == report[name]["default"]["n"] == 6
        assert 0.0 < report[name]["graph_ef512"]["recall@10"] <= 1.0 and report[name]["default"]["paired_p50_ratio"] > 0
    assert report["filtered"]["default"]["recall@10"] == 1.0  # a few hundred points: exact
    # and where a filtered query's time goes, on the same kept index
    profiled = subprocess.run(
        [sys.executable, "-m", "bench.scale_profile", "--reuse", str(tmp_path / "scale-edge-1500-f32"),
         "--size", "1500", "--queries", "8", "--warm", "2", "--json", str(tmp_path / "profile.json")],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert profiled.returncode == 0, profiled.stderr[-3000:]
    profile = json.loads((tmp_path / "profile.json").read_text())["profile"]
    assert profile["category_7"]["points"] == built["filter_points"]["filtered"]
    assert profile["ten_categories"]["points"] == built["filter_points"]["filtered_wide"]
    for rows in profile.values():
        assert set(rows) == {"points", "query_fused", "engine_exact"}  # float32: no int8 scan to time
        assert rows["query_fused"]["n"] == rows["engine_exact"]["n"] == 8
        assert 0 < rows["engine_exact"]["p50_ms"] <= rows["engine_exact"]["p99_ms"]
    assert "category_7" in profiled.stdout and "engine_exact" in profiled.stdout
    # with int8, the planner's scan of the int8 copy is timed too
    built8 = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--size", "1500", "--centres", str(centres), "--queries", "3",
         "--quantization", "int8", "--exact-filter-kb", "100000", "--workdir", str(tmp_path),
         "--json", str(tmp_path / "build8.json"), "--keep"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert built8.returncode == 0, built8.stderr[-3000:]
    profiled8 = subprocess.run(
        [sys.executable, "-m", "bench.scale_profile", "--reuse", str(tmp_path / "scale-edge-1500-int8"),
         "--size", "1500", "--quantization", "int8", "--queries", "8", "--warm", "2",
         "--json", str(tmp_path / "profile8.json")],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert profiled8.returncode == 0, profiled8.stderr[-3000:]
    report8 = json.loads((tmp_path / "profile8.json").read_text())
    assert report8["quantization"] == "int8" and report8["exact_filter_kb"] == 100_000
    for rows in report8["profile"].values():
        assert set(rows) == {"points", "query_fused", "engine_exact", "engine_planner_int8"}
        assert rows["engine_planner_int8"]["n"] == 8 and rows["engine_planner_int8"]["p50_ms"] > 0
