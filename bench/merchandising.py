"""What pins, blocks and rules add to a widget render: ``python -m bench.merchandising``.

Measured against the same work with merchandising off, pair by pair in one run (so both sides
see the same machine load), on flipkart-1050 products indexed with the real encoders into a
throw-away Qdrant Edge shard (``--workdir`` keeps it for the next run). The model has an
``exclude_category`` rule over every measured product's top category and an ``in_stock`` boost;
each product's own pins and blocks change by phase (:data:`PHASES`).

Rows, per phase (p50 / p95 of the per-render difference, on minus off, in ms):

- ``find_similar``: an uncached list (what a widget runs on a cache miss), ``merchandise=True``
  vs ``merchandise=False``;
- ``widget render, cached``: ``{% similar_products_widget %}`` served from the cache (the
  storefront's usual case) vs the same render with merchandising switched off;
- ``widget render, cache miss``: the same tag on an emptied cache;
- ``version()``: the per-render check that a staff edit happened.

Also run by ``python -m bench --only merchandising``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

#: the rows, in the order printed
ROWS = ("find_similar", "widget_cached", "widget_cache_miss", "version_check")
LABELS = {
    "find_similar": "find_similar (uncached list)",
    "widget_cached": "widget render, cached",
    "widget_cache_miss": "widget render, cache miss",
    "version_check": "version() per render",
}


def _ms(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "n": len(samples)}


@contextlib.contextmanager
def merchandising_off() -> Iterator[None]:
    """Merchandising switched off where it runs (``find_similar``'s plan and apply, the cache
    key's version), for the "off" side of a widget render."""
    from similarity import merchandising

    apply, version, plan = merchandising.apply, merchandising.version, merchandising.plan
    merchandising.apply = lambda obj, spec, hits, **_: hits  # type: ignore[assignment]
    merchandising.version = lambda: "off"  # type: ignore[assignment]
    merchandising.plan = lambda obj, spec: merchandising.Plan()  # type: ignore[assignment]
    try:
        yield
    finally:
        merchandising.apply, merchandising.version, merchandising.plan = apply, version, plan  # type: ignore[assignment]


def _merge(parts: list[dict[str, list[float]]]) -> dict[str, Any]:
    """``on`` and ``off`` percentiles, ``added`` (their difference: what merchandising adds at
    p50 and at p95) and ``paired`` (percentiles of the pair-by-pair differences, noisier)."""
    raw: dict[str, list[float]] = {"on": [], "off": [], "difference": []}
    for part in parts:
        for side in raw:
            raw[side] += part["_raw_" + side]
    on, off = _ms(raw["on"]), _ms(raw["off"])
    return {"on": on, "off": off, "paired": _ms(raw["difference"]),
            "added": {"p50_ms": round(on["p50_ms"] - off["p50_ms"], 3),
                      "p95_ms": round(on["p95_ms"] - off["p95_ms"], 3)}}


def _paired_raw(on: Callable[[], Any], off: Callable[[], Any], rounds: int) -> dict[str, list[float]]:
    """``on`` and ``off`` in pairs, which one goes first alternating."""
    out: dict[str, list[float]] = {"_raw_on": [], "_raw_off": [], "_raw_difference": []}
    for i in range(rounds):
        times = {}
        for side, fn in ((("on", on), ("off", off)) if i % 2 == 0 else (("off", off), ("on", on))):
            start = time.perf_counter()
            fn()
            times[side] = time.perf_counter() - start
        out["_raw_on"].append(times["on"])
        out["_raw_off"].append(times["off"])
        out["_raw_difference"].append(times["on"] - times["off"])
    return out


def ensure_indexed(products: list[Any]) -> None:
    from similarity.indexing import index_products

    index_products([p.pk for p in products])  # unchanged content is not re-encoded


def set_up_decisions(spec: Any, sources: list[Any], limit: int) -> dict[Any, list[Any]]:
    """The rules, and for each source its ranking (``merchandise=False``, twice the limit)."""
    from similarity import merchandising
    from similarity.models import Block, MerchandisingRule, Pin
    from similarity.query import find_similar

    Pin.objects.filter(model_label=spec.label).delete()
    Block.objects.filter(model_label=spec.label).delete()
    MerchandisingRule.objects.filter(model_label=spec.label).delete()
    ranking: dict[Any, list[Any]] = {}
    tops: set[str] = set()
    for source in sources:
        ranked = [hit.pk for hit in find_similar(source, limit=limit * 2, merchandise=False)]
        if len(ranked) < limit + 4:
            continue
        ranking[source.pk] = ranked
        tops.update(spec.get_taxonomy(source)[:1])
        merchandising.pin(spec, source.pk, ranked[3], 0)  # two of its own neighbours, moved up
        merchandising.pin(spec, source.pk, ranked[5], 2)
        merchandising.block(spec, source.pk, ranked[limit + 1])  # blocked, beyond what is shown
    # A category rule every source's list is checked against (its hits' categories are read), naming
    # a category none of them shows, so it drops nothing; and a boost.
    for top in sorted(tops):
        MerchandisingRule.objects.create(model_label=spec.label, kind="exclude_category", value=top,
                                         other="no such category (bench)")
    MerchandisingRule.objects.create(model_label=spec.label, kind="boost", field="in_stock", value="true", amount=0.01)
    return ranking


#: what changes between the phases, for each source and its ranking
PHASES: tuple[tuple[str, str], ...] = (
    ("pins_in_list", "2 pins among its neighbours, 1 block beyond the list, category + boost rules"),
    ("pin_from_beyond", "and a 3rd pin from beyond the list (loaded with the spec's queryset)"),
    ("block_in_list", "no pins; a block of its best neighbour (one more hit needed from further down)"),
)


def _next_phase(phase: str, spec: Any, ranking: dict[Any, list[Any]], limit: int) -> None:
    from similarity import merchandising

    for source_pk, ranked in ranking.items():
        if phase == "pin_from_beyond":
            merchandising.pin(spec, source_pk, ranked[limit + 2], 1)
        elif phase == "block_in_list":
            for target in (ranked[3], ranked[5], ranked[limit + 2]):
                merchandising.clear(spec, source_pk, target)
            merchandising.block(spec, source_pk, ranked[0])


def _render(widget: Any, page: Any, *, off: bool = False, clear: bool = False) -> None:
    """One widget render, with merchandising ``off`` or on, on an emptied cache when ``clear``."""
    from django.core.cache import cache

    if clear:
        cache.clear()
    with merchandising_off() if off else contextlib.nullcontext():
        widget.render(page)


@contextlib.contextmanager
def _counting(spec: Any) -> Iterator[dict[str, int]]:
    """Database queries and vector searches run inside the block (deterministic, unlike time)."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    from similarity import registry

    index_class = type(registry.vector_index(spec))
    search = index_class.query_fused
    counts = {"queries": 0, "searches": 0}

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["searches"] += 1
        return search(self, *args, **kwargs)

    index_class.query_fused = counted  # type: ignore[method-assign]
    reset_queries()  # a full log (DEBUG keeps 9,000) would capture nothing
    try:
        with CaptureQueriesContext(connection) as captured:
            yield counts
    finally:
        index_class.query_fused = search  # type: ignore[method-assign]
    counts["queries"] = len(captured.captured_queries)


def _work(fn: Callable[[], Any], spec: Any) -> dict[str, int]:
    with _counting(spec) as counts:
        fn()
    return counts


def bench_merchandising(products: list[Any], n_sources: int, rounds: int, limit: int = 8,
                        index_limit: int = 120) -> dict[str, Any]:
    """``n_sources`` products x ``rounds`` on/off pairs per row and phase; the first
    ``index_limit`` products are indexed when they are not yet (a full run has indexed all)."""
    from django.template import Context, Template

    from similarity import merchandising, registry
    from similarity.models import Block, MerchandisingRule, Pin
    from similarity.query import find_similar

    ensure_indexed(products[:index_limit])
    spec = registry.get_spec(type(products[0]))
    rng = np.random.default_rng(0)
    pool = products[:index_limit]
    picks = [pool[i] for i in rng.choice(len(pool), size=min(n_sources * 2, len(pool)), replace=False)]
    ranking = set_up_decisions(spec, picks, limit)
    ranking = dict(list(ranking.items())[:n_sources])
    # each source as a product page has it (its category chain loaded)
    sources = [spec.get_queryset().get(pk=pk) for pk in ranking]
    widget = Template("{% load similarity %}{% similar_products_widget product limit=" + str(limit) + " %}")
    out: dict[str, Any] = {"sources": len(sources), "limit": limit, "rounds_per_source": rounds,
                           "load_average_at_start": os.getloadavg(), "phases": dict(PHASES)}
    for phase, _description in PHASES:
        _next_phase(phase, spec, ranking, limit)
        parts: dict[str, list[dict[str, list[float]]]] = {row: [] for row in ROWS}
        for source in sources:
            on = [h.pk for h in find_similar(source, limit=limit)]  # warm: this process reads the new rules
            assert len(on) == limit and on != [h.pk for h in find_similar(source, limit=limit, merchandise=False)]
            page = Context({"product": source})
            parts["find_similar"].append(_paired_raw(
                functools.partial(find_similar, source, limit=limit),
                functools.partial(find_similar, source, limit=limit, merchandise=False), rounds))
            widget.render(page)  # the cache entries of both sides
            with merchandising_off():
                widget.render(page)
            parts["widget_cached"].append(_paired_raw(
                functools.partial(_render, widget, page), functools.partial(_render, widget, page, off=True), rounds))
            parts["widget_cache_miss"].append(_paired_raw(
                functools.partial(_render, widget, page, clear=True),
                functools.partial(_render, widget, page, off=True, clear=True), rounds))
            parts["version_check"].append(_paired_raw(merchandising.version, lambda: None, rounds))
        out[phase] = {row: _merge(parts[row]) for row in ROWS}
        # what one render runs, on and off (the last product's; the same for each)
        last, page = sources[-1], Context({"product": sources[-1]})
        on_off: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "find_similar": (functools.partial(find_similar, last, limit=limit),
                             functools.partial(find_similar, last, limit=limit, merchandise=False)),
            "widget_cache_miss": (functools.partial(_render, widget, page, clear=True),
                                  functools.partial(_render, widget, page, off=True, clear=True)),
            "widget_cached": (functools.partial(_render, widget, page),
                              functools.partial(_render, widget, page, off=True)),
        }
        for row, (on_fn, off_fn) in on_off.items():
            on_fn(), off_fn()  # both sides' cache entries (the cached row), this process's rules
            out[phase][row]["work"] = {"on": _work(on_fn, spec), "off": _work(off_fn, spec)}
    for model in (Pin, Block, MerchandisingRule):
        model.objects.filter(model_label=spec.label).delete()
    out["load_average_at_end"] = os.getloadavg()
    return out


def table_lines(results: dict[str, Any]) -> list[str]:
    merch = results.get("merchandising")
    if not merch:
        return []
    lines = [f"merchandising: added per render = on - off, same run ({merch['sources']} products x "
             f"{merch['rounds_per_source']} pairs, limit {merch['limit']})"]
    for phase, description in PHASES:
        lines.append(f"  {phase}: {description}")
        for row in ROWS:
            r = merch[phase][row]
            work = r.get("work")
            lines.append(
                f"    {LABELS[row]:<30} added p50 {r['added']['p50_ms']:6.3f} p95 {r['added']['p95_ms']:6.3f} ms"
                f" | on p50 {r['on']['p50_ms']:6.2f} p95 {r['on']['p95_ms']:6.2f}"
                f" | off p50 {r['off']['p50_ms']:6.2f} p95 {r['off']['p95_ms']:6.2f}"
                f" | paired p50 {r['paired']['p50_ms']:6.3f} ms"
                + (f" | queries {work['on']['queries']}/{work['off']['queries']},"
                   f" searches {work['on']['searches']}/{work['off']['searches']} (on/off)" if work else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.merchandising", description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=120, help="flipkart-1050 rows to import and index")
    parser.add_argument("--sources", type=int, default=20, help="products whose lists are measured")
    parser.add_argument("--rounds", type=int, default=20, help="on/off pairs per product and row")
    parser.add_argument("--workdir", type=Path, default=None, help="kept between runs (default: a new temp folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "merchandising.json")
    args = parser.parse_args(argv)
    from bench.run import _setup, load_catalog

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="similarity-merch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    _setup("cpu", workdir)
    from catalog.models import Product

    products = list(Product.objects.order_by("pk")) or load_catalog(args.products)
    results = {"merchandising": bench_merchandising(products, args.sources, args.rounds, index_limit=args.products)}
    print("\n".join(table_lines(results)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
