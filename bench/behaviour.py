"""What the behaviour pieces cost a request.

``python -m bench.behaviour --hooks [--n 300]`` (also ``python -m bench --only behaviour``): the
view hook and the analytics beacon, on a throw-away SQLite database and, when it is reachable,
on PostgreSQL (``BENCH_DATABASE_URL``, default postgres://postgres@127.0.0.1:5432/similarity_bench)
and Redis (``BENCH_REDIS_URL``, default redis://127.0.0.1:6379/13; keys under a prefix of
the run, removed afterwards, nothing else touched). p50 and p95 in ms:

- the view hook, per ``SESSION_ENGINE`` (``db``, ``cached_db``, ``cache`` on local memory and on
  Redis, ``signed_cookies``) and per place of the views (``SIMILARITY["VIEWS_CACHE"]`` on Redis,
  on local memory, or ``""``: in the session, as before the cache): a product page through
  Django's ``SessionMiddleware`` with the hook against the same page without it, request by
  request (the added cost is the paired difference: what the hook reads and writes, and any
  session load and save it causes); a new visitor's first view (the session is created: one
  save, unavoidable), a page of a new product (the recent views change), and a reload (nothing
  changes), with a naive hook that writes the session on every page as the baseline
  (``BENCH_VIEW_HOOK="db, views in Redis;..."`` runs only those setups);
- the beacon, per hit: one UPDATE per hit (the naive baseline, and what a per-process cache
  gets) against the counter in the cache (local memory, Redis), and what a flush costs.

``python -m bench.behaviour [--n 300]`` (no ``--hooks``) measures the widgets instead, against
the configured database (``VAR_DIR``) after ``import_catalog``/``import_events``/
``similarity_train --behaviour`` (``make demo`` does all three):

- the view hook (``record_view`` on a saved session: the views cache) and a session save (what
  a hook that writes the session would add);
- the ``bought_together`` and ``recommended_for_you`` tags on a warm cache (a cached page);
- the same tags on a cold cache (the first visitor after a model change).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
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


ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/similarity_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
SESSION_ENGINES = {
    "db": "django.contrib.sessions.backends.db",
    "cached_db": "django.contrib.sessions.backends.cached_db",
    "cache (local memory)": "django.contrib.sessions.backends.cache",
    "cache (Redis)": "django.contrib.sessions.backends.cache",
    "signed_cookies": "django.contrib.sessions.backends.signed_cookies",
}
#: the view hook's setups: (session engine, where the views go: SIMILARITY["VIEWS_CACHE"])
VIEW_HOOK_SETUPS = {
    "db, views in Redis": ("db", "redis"),
    "db, views in local memory": ("db", "locmem"),
    "db, views in the session": ("db", "session"),  # VIEWS_CACHE = "": the hook before the cache
    "cached_db, views in Redis": ("cached_db", "redis"),
    "cache (Redis), views in Redis": ("cache (Redis)", "redis"),
    "cache (local memory), views in local memory": ("cache (local memory)", "locmem"),
    "signed_cookies": ("signed_cookies", "session"),  # the views are always in a signed-cookie session
}
VIEW_HOOK_CASES = ("first_view", "new_product", "reload", "reload_naive")


def _pct(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered), 3),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3), "n": len(ordered)}


def _redis_up(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _redis_prefix() -> str:
    return f"similarity-bench-{os.getpid()}"


def _drop_redis_keys(url: str) -> None:
    """Only this run's keys: the Redis database may be shared (never FLUSHDB)."""
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{_redis_prefix()}:*"):
        client.delete(key)


def _naive_record_view(request: Any, obj: Any) -> None:
    """The baseline: the recent views written to the session on every page, reloads included."""
    from similarity import registry
    from similarity.behaviour.recording import RECENT_VIEWS, SESSION_KEY

    spec = registry.get_spec(type(obj))
    label, key = spec.label, spec.object_key(obj.pk)
    recent = [row for row in request.session.get(SESSION_KEY, []) if not (row[0] == label and row[1] == key)]
    recent.append([label, key, int(time.time())])
    request.session[SESSION_KEY] = recent[-RECENT_VIEWS:]


def _view_hook(hook: Callable[[Any, Any], None], products: list[Any], n: int,
               case: str) -> dict[str, Any]:
    """Pages through ``SessionMiddleware``, with and without ``hook``, alternating, one visitor
    (``first_view``: a new visitor each time, without a session cookie)."""
    from django.conf import settings
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.http import HttpResponse
    from django.test import RequestFactory

    turn = iter(range(10**9))
    reload = case in ("reload", "reload_naive")

    def with_hook(request: Any) -> HttpResponse:
        i = next(turn)
        hook(request, products[0 if reload else i % len(products)])
        return HttpResponse("product page")

    hooked = SessionMiddleware(with_hook)
    plain = SessionMiddleware(lambda request: HttpResponse("product page"))
    factory, cookie = RequestFactory(), ""

    def page(middleware: SessionMiddleware) -> float:
        nonlocal cookie
        request = factory.get("/product/1/")
        if cookie:
            request.COOKIES[settings.SESSION_COOKIE_NAME] = cookie
        start = time.perf_counter()
        response = middleware(request)
        elapsed = (time.perf_counter() - start) * 1000
        if settings.SESSION_COOKIE_NAME in response.cookies:
            cookie = response.cookies[settings.SESSION_COOKIE_NAME].value
        if case == "first_view":
            cookie = ""
        return elapsed

    for _ in range(5):  # the session exists and the connections are open before the timing
        page(hooked)
    with_samples, without = [], []
    for _ in range(n):
        without.append(page(plain))
        with_samples.append(page(hooked))
    added = [a - b for a, b in zip(with_samples, without, strict=True)]
    return {"page_with_hook": _pct(with_samples), "page_without": _pct(without), "added": _pct(added)}


def _sessions(products: list[Any], n: int, redis_url: str | None) -> dict[str, Any]:
    from django.conf import settings
    from django.test import override_settings

    from similarity.behaviour.recording import record_view

    redis_cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url,
                   "KEY_PREFIX": _redis_prefix()}
    stores = {"redis": redis_cache, "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                               "LOCATION": "bench-views"}}
    out: dict[str, Any] = {}
    chosen = [n.strip() for n in os.environ.get("BENCH_VIEW_HOOK", "").split(";") if n.strip()]
    for name, (engine, views) in VIEW_HOOK_SETUPS.items():
        if chosen and name not in chosen:
            continue
        if not redis_url and (views == "redis" or "Redis" in engine):
            out[name] = {"skipped": "Redis is not reachable"}
            continue
        caches = {**settings.CACHES, "bench-sessions": redis_cache, "bench-views": stores.get(views, {})}
        if views == "session":
            caches.pop("bench-views")
        overrides = {"SESSION_ENGINE": SESSION_ENGINES[engine], "CACHES": caches,
                     "SIMILARITY": {**settings.SIMILARITY, "VIEWS_CACHE": "" if views == "session" else "bench-views"}}
        if engine == "cache (Redis)":
            overrides["SESSION_CACHE_ALIAS"] = "bench-sessions"
        with override_settings(**overrides):
            out[name] = {case: _view_hook(_naive_record_view if case == "reload_naive" else record_view,
                                          products, n, case) for case in VIEW_HOOK_CASES}
    return out


def _beacons(n: int, redis_url: str | None) -> dict[str, Any]:
    from django.conf import settings
    from django.core.cache import caches
    from django.test import RequestFactory, override_settings

    from similarity.behaviour import analytics, views

    factory = RequestFactory()
    requests = [factory.post(f"/similarity/beacon?w=bought_together&p=place-{i % 3}&e={'ic'[i % 2]}")
                for i in range(6)]
    modes: dict[str, tuple[dict[str, Any], bool | None]] = {
        "database (naive: one UPDATE per hit)": ({"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}, False),
        "cache, local memory (one process)": (
            {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "bench-beacon"}, True),
    }
    if redis_url:
        modes["cache, Redis"] = ({"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                  "LOCATION": redis_url, "KEY_PREFIX": _redis_prefix()}, None)
    out: dict[str, Any] = {}
    for name, (cache, buffer) in modes.items():
        with override_settings(CACHES={**settings.CACHES, "bench-beacon": cache},
                               SIMILARITY={**settings.SIMILARITY, "BEACON_CACHE": "bench-beacon",
                                           "BEACON_BUFFER": buffer}):
            assert analytics.buffered() == (buffer is not False)
            for request in requests:  # the day's counters and rows exist
                views.beacon(request)
            analytics.flush()
            out[name] = _pct([_timed_ms(partial(views.beacon, requests[i % len(requests)])) for i in range(n)])
            start = time.perf_counter()
            moved = analytics.flush()
            out[name]["flush_ms"] = round((time.perf_counter() - start) * 1000, 3)
            out[name]["flushed"] = moved.get("flushed", 0)
            if buffer is False:
                caches["bench-beacon"].clear()  # local memory of this process only
    return out


def _timed_ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def bench_hooks(n: int = 300) -> dict[str, Any]:
    """The view hook and the beacon on the configured database (Django set up and migrated)."""
    from django.db import connection

    from similarity import registry

    model = registry.get_spec().model_class
    products = [model(pk=pk) for pk in range(1, 13)]  # the hook needs a key, not a row
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
    redis_url = redis_url if _redis_up(redis_url) else None
    try:
        return {"database": connection.vendor, "load_average": os.getloadavg(),
                "view_hook": _sessions(products, n, redis_url), "beacon": _beacons(n, redis_url)}
    finally:
        if redis_url:
            _drop_redis_keys(redis_url)


def bench_hooks_postgres(n: int = 300) -> dict[str, Any]:
    """:func:`bench_hooks` in a child process on PostgreSQL (skipped when it is not reachable)."""
    from bench.celery_freshness import _ensure_database

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    try:
        _ensure_database(url)
    except Exception as exc:  # noqa: BLE001 - any failure means no PostgreSQL to measure on
        return {"skipped": f"PostgreSQL is not reachable at {url}: {exc}"}
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings",
           "VAR_DIR": tempfile.mkdtemp(prefix="similarity-bench-hooks-")}
    env.setdefault("DJANGO_DEBUG", "1")
    run = subprocess.run([sys.executable, "-m", "bench.behaviour", "--hooks", "--n", str(n), "--here"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if run.returncode:
        return {"error": run.stderr[-2000:]}
    return dict(json.loads(run.stdout))


def hooks_table(results: dict[str, Any]) -> list[str]:
    lines = []
    for db, part in results.items():
        if "view_hook" not in part:
            lines.append(f"behaviour hooks on {db}: {part.get('skipped') or part.get('error')}")
            continue
        for setup, row in part["view_hook"].items():
            if "skipped" in row:
                continue
            for case in VIEW_HOOK_CASES:
                added = row[case]["added"]
                lines.append(f"view hook {db:<10} {setup:<43} {case:<12} adds p50 {added['p50_ms']:6.2f} ms"
                             f"  p95 {added['p95_ms']:6.2f} ms")
        for mode, row in part["beacon"].items():
            lines.append(f"beacon {db:<10} {mode:<38} p50 {row['p50_ms']:6.2f} ms  p95 {row['p95_ms']:6.2f} ms"
                         f"  (flush {row['flush_ms']:.1f} ms)")
    return lines


def _setup_throwaway() -> None:
    os.environ["VAR_DIR"] = tempfile.mkdtemp(prefix="similarity-bench-hooks-")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ.setdefault("DJANGO_DEBUG", "1")
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "QDRANT_URL", "REDIS_CACHE_URL"):
        os.environ.pop(name, None)
    os.environ.setdefault("SIMILARITY_LOG", "WARNING")


def hooks_main(n: int, here: bool) -> None:
    """``--hooks``: SQLite (a throw-away folder) here, PostgreSQL in a child; ``--here``: only
    the database of the environment, JSON on stdout (the child)."""
    if not here:
        _setup_throwaway()
    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if here:
        print(json.dumps(bench_hooks(n)))
        return
    results = {"sqlite": bench_hooks(n), "postgresql": bench_hooks_postgres(n)}
    print(json.dumps(results, indent=2))
    print("\n".join(hooks_table(results)), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--hooks", action="store_true", help="the view hook and the beacon (a throw-away database)")
    parser.add_argument("--here", action="store_true", help="with --hooks: the configured database only, JSON")
    args = parser.parse_args()
    if args.hooks:
        hooks_main(args.n, args.here)
        return
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
