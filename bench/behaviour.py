"""What the behaviour pieces cost a request: ``python -m bench.behaviour [--n 300]``.

Runs against the configured database (``VAR_DIR``) after ``import_catalog``/``import_events``/
``similarity_train --behaviour`` (``make demo`` does all three). Measures, median and p95 in ms:

- the view hook (``record_view`` on a session) and the session save it causes;
- the analytics beacon (the view, one counter UPDATE);
- the ``bought_together`` and ``recommended_for_you`` tags on a warm cache (a cached page);
- the same tags on a cold cache (the first visitor after a model change).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import django


def _ms(fn: Callable[[], Any], n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 3), "p95_ms": round(samples[int(0.95 * (n - 1))], 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.cache import cache
    from django.template import Context, Template
    from django.test import RequestFactory

    from similarity import registry, services
    from similarity.behaviour import views
    from similarity.behaviour.artifacts import live_artifact

    spec = registry.get_spec()
    artifact = live_artifact(spec)
    if artifact is None:
        raise SystemExit("no live behaviour model: run import_events and similarity_train --behaviour first")
    keys = [str(artifact.keys[i]) for i in artifact.counts.argsort()[::-1][:50]]
    products = list(spec.get_queryset().filter(pk__in=[spec.to_pk(k) for k in keys]))
    factory = RequestFactory()
    request = factory.get("/")
    request.session = SessionStore()
    services.record_view(request, products[0])
    request.session.save()
    out: dict[str, Any] = {}
    turn = iter(range(10**9))
    out["view_hook"] = _ms(lambda: services.record_view(request, products[next(turn) % len(products)]), args.n)
    out["view_hook_session_save"] = _ms(request.session.save, min(args.n, 100))
    beacon = factory.post("/similarity/beacon?w=bought_together&p=product&e=i")
    out["beacon"] = _ms(lambda: views.beacon(beacon), min(args.n, 200))

    bought = Template("{% load similarity %}{% bought_together product %}")
    recommended = Template("{% load similarity %}{% recommended_for_you current=product %}")
    product = products[1]
    for p in products[:6]:
        services.record_view(request, p)
    page = Context({"product": product, "request": request})
    bought.render(page), recommended.render(page)  # warm: the cached page
    out["bought_together_warm"] = _ms(lambda: bought.render(page), args.n)
    out["recommended_for_you_warm"] = _ms(lambda: recommended.render(page), args.n)

    def cold(template: Template) -> Callable[[], Any]:
        def run() -> Any:
            cache.clear()
            return template.render(page)
        return run

    out["bought_together_cold"] = _ms(cold(bought), min(args.n, 50))
    out["recommended_for_you_cold"] = _ms(cold(recommended), min(args.n, 50))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
