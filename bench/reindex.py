"""Indexing throughput: ``similarity_reindex --all`` against the plain one-product-at-a-time fp32
loop, in one run, with an ablation of the CPU levers and the int8 text model's quality check.

Sections of ``python -m bench`` (``--only reindex``, ``--only text_int8``); see docs/benchmarks.md.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cpu_seconds() -> float:
    """CPU time of this process, every thread: less sensitive to other people's load than the
    wall clock (though OpenMP threads spinning at a barrier count too)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def levers(*, pipeline: bool, frozen_image: bool, onnx: bool = False, torch_threads: int = 0) -> Iterator[None]:
    """Turn the CPU levers on or off for a measurement (all are on by default).

    ``pipeline``: ``encoders.pipeline`` overlaps decoding and the two models in threads, with the
    cores split between the models; off, everything runs in the calling thread. ``frozen_image``:
    the image model runs an optimised copy on a CPU (the frozen TorchScript one, or with
    ``onnx`` ONNX Runtime's). ``onnx``: both models' float32 forward passes on ONNX Runtime
    (encoders/onnx_runtime.py). ``torch_threads``: the calling thread's intra-op threads while
    off-pipeline (0: torch's default).
    """
    import torch

    from similarity import registry
    from similarity.encoders import pipeline as encode_pipeline

    image, text = registry.base_image_encoder(), registry.base_text_encoder()
    saved = (encode_pipeline.CONCURRENT, image.optimise, image.onnx, text.onnx, torch.get_num_threads())
    encode_pipeline.CONCURRENT, image.optimise = pipeline, frozen_image
    image.onnx = text.onnx = onnx
    if torch_threads:
        torch.set_num_threads(torch_threads)
    try:
        yield
    finally:
        encode_pipeline.CONCURRENT, image.optimise, image.onnx, text.onnx = saved[:4]
        torch.set_num_threads(saved[4])


def _index_in_batches(ids: list[Any], batch_size: int) -> None:
    """What a rebuild does per batch (``index_products(force=True)``), into the live index."""
    from similarity import services

    for start in range(0, len(ids), batch_size):
        services.index_products(ids[start : start + batch_size], force=True)


def _one_at_a_time(ids: list[Any]) -> None:
    from similarity import services

    for pk in ids:
        services.index_products([pk], force=True)


#: the ablation, cumulative: (name, how, pipeline, frozen image model, ONNX Runtime, text int8,
#: fewer threads)
ABLATION = (
    ("one at a time, plain fp32 (the baseline)", "single", False, False, False, False, False),
    ("batched, plain fp32", "batched", False, False, False, False, False),
    ("batched, plain fp32, torch threads = cores/2", "batched", False, False, False, False, True),
    ("+ pipeline: decode/text/image overlapped, cores split", "batched", True, False, False, False, False),
    ("+ frozen TorchScript image model", "batched", True, True, False, False, False),
    ("+ ONNX Runtime, both models float32", "batched", True, True, True, False, False),
    ("+ int8 text model, per channel (the default)", "batched", True, True, True, True, False),
)


def _fp32() -> Any:
    """The float32 text model (the plain loop's; the default is int8)."""
    from django.conf import settings
    from django.test import override_settings

    return override_settings(SIMILARITY={**settings.SIMILARITY, "TEXT_QUANTIZATION": ""})


def bench_reindex(products: list[Any], *, n_single: int, n_ablation: int, batch_size: int,
                  repeats: int) -> dict[str, Any]:
    """The headline (one run): the plain loop on ``n_single`` products, ``similarity_reindex
    --all`` on every product with the defaults, the plain loop again (the better of the two
    plain rates is the baseline, so load changes never favour the pipeline); then the ablation
    on ``n_ablation`` products, its rows measured in alternation ``repeats`` times, best kept."""
    import torch
    from django.core.management import call_command

    from similarity import registry

    ids = [p.pk for p in products]
    registry.text_encoder().encode(["warm up"])  # models load outside the timings
    warm = ids[:2]
    with _fp32(), levers(pipeline=False, frozen_image=False):
        _one_at_a_time(warm)
    _index_in_batches(warm, batch_size)  # loads the ONNX Runtime copies, starts the threads
    with levers(pipeline=True, frozen_image=True):
        _index_in_batches(warm, batch_size)  # and the frozen TorchScript one (an ablation row)
    single_ids = ids[:n_single]
    plain_rates = []
    with _fp32(), levers(pipeline=False, frozen_image=False):
        plain_rates.append(len(single_ids) / _timed(lambda: _one_at_a_time(single_ids)))
    sink = io.StringIO()
    elapsed = _timed(lambda: call_command("similarity_reindex", "--all", "--restart",
                                          f"--batch-size={batch_size}", stdout=sink))
    with _fp32(), levers(pipeline=False, frozen_image=False):
        plain_rates.append(len(single_ids) / _timed(lambda: _one_at_a_time(single_ids)))
    plain = max(plain_rates)
    reindex_rate = len(ids) / elapsed
    out: dict[str, Any] = {
        "products": len(ids), "batch_size": batch_size, "reindex_all_seconds": elapsed,
        "reindex_all_products_per_s": reindex_rate, "one_at_a_time_products": len(single_ids),
        "one_at_a_time_products_per_s": plain, "one_at_a_time_runs_products_per_s": plain_rates,
        "speedup": reindex_rate / plain, "torch_threads_default": torch.get_num_threads(),
        "command_output": sink.getvalue().strip(),
    }
    out["ablation"] = ablation(ids[:n_ablation], batch_size=batch_size, repeats=repeats)
    return out


def ablation(ids: list[Any], *, batch_size: int, repeats: int) -> dict[str, Any]:
    from django.conf import settings
    from django.test import override_settings

    from similarity.encoders.pipeline import model_threads

    rates: dict[str, list[float]] = {name: [] for name, *_rest in ABLATION}
    cpu_ms: dict[str, list[float]] = {name: [] for name, *_rest in ABLATION}
    for _round in range(repeats):
        for name, how, pipeline, frozen, onnx, int8, fewer_threads in ABLATION:
            quantised = {**settings.SIMILARITY, "TEXT_QUANTIZATION": "int8" if int8 else ""}
            threads = model_threads()[0] if fewer_threads else 0
            with override_settings(SIMILARITY=quantised), levers(pipeline=pipeline, frozen_image=frozen, onnx=onnx,
                                                                 torch_threads=threads):
                run = (lambda: _one_at_a_time(ids)) if how == "single" else (lambda: _index_in_batches(ids, batch_size))
                if _round == 0:
                    _index_in_batches(ids[:2], batch_size)  # load this row's models untimed
                cpu = _cpu_seconds()
                rates[name].append(len(ids) / _timed(run))
                cpu_ms[name].append(1000 * (_cpu_seconds() - cpu) / len(ids))
    base = max(rates[ABLATION[0][0]])
    return {"products": len(ids), "batch_size": batch_size, "repeats": repeats, "rows": [
        {"lever": name, "products_per_s": max(rates[name]), "runs": rates[name],
         "vs_baseline": max(rates[name]) / base, "cpu_ms_per_product": min(cpu_ms[name])}
        for name, *_rest in ABLATION
    ]}


def _evaluate(folder: Path, name: str) -> dict[str, Any]:
    from django.core.management import call_command

    path = folder / f"{name}.json"
    call_command("similarity_evaluate", "--json", str(path), "--rankings", "text,fused", stdout=io.StringIO())
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def bench_text_int8(products: list[Any], batch_size: int) -> dict[str, Any]:
    """``similarity_evaluate`` (text and fused rankings) with the fp32 text model, then with the
    int8 one (only the texts are re-encoded: the text model's version changed)."""
    from django.conf import settings
    from django.test import override_settings

    from similarity import registry, services

    ids = [p.pk for p in products]
    folder = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    out: dict[str, Any] = {}
    for name, quantization in (("fp32", ""), ("int8", "int8")):
        with override_settings(SIMILARITY={**settings.SIMILARITY, "TEXT_QUANTIZATION": quantization}):
            encoder = registry.text_encoder()
            encoded = 0
            started = time.perf_counter()
            for start in range(0, len(ids), batch_size):
                encoded += services.index_products(ids[start : start + batch_size]).encoded["text"]
            out[name] = {"version": encoder.version, "texts_encoded": encoded,
                         "index_seconds": time.perf_counter() - started, "metrics": _evaluate(folder, name)}
    out["delta"] = {
        ranking: {metric: out["int8"]["metrics"][ranking][metric] - value for metric, value in metrics.items()}
        for ranking, metrics in out["fp32"]["metrics"].items()
    }
    return out


def table_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    e2e = results.get("reindex")
    if e2e:
        lines.append(
            f"similarity_reindex --all: {e2e['reindex_all_products_per_s']:.1f} products/s ({e2e['products']} "
            f"products, batch {e2e['batch_size']}) vs the plain one-at-a-time fp32 loop "
            f"{e2e['one_at_a_time_products_per_s']:.1f} products/s ({e2e['one_at_a_time_products']} products, "
            f"best of 2): {e2e['speedup']:.2f}x"
        )
        abl = e2e.get("ablation")
        if abl:
            lines.append(f"  ablation ({abl['products']} products, best of {abl['repeats']}, in alternation):")
            lines += [f"  {row['lever']:<56}{row['products_per_s']:>8.1f} products/s {row['vs_baseline']:>6.2f}x"
                      + (f"  {row['cpu_ms_per_product']:6.0f} CPU ms/product" if "cpu_ms_per_product" in row else "")
                      for row in abl["rows"]]
    q = results.get("text_int8")
    if q:
        for ranking, deltas in q["delta"].items():
            shown = ", ".join(f"{metric} {q['fp32']['metrics'][ranking][metric]:.4f} -> "
                              f"{q['int8']['metrics'][ranking][metric]:.4f} ({delta:+.4f})"
                              for metric, delta in sorted(deltas.items()) if metric.endswith("@10"))
            lines.append(f"text int8 vs fp32, {ranking}: {shown}")
    return lines
