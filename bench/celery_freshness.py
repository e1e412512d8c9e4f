"""Freshness with a real Celery worker: commit → the worker has written the new vectors.

``python -m bench.celery_freshness [--trials N]`` (or ``python -m bench --only celery``). Needs
PostgreSQL and Redis (``BENCH_DATABASE_URL``, default postgres://postgres@127.0.0.1:5432/similarity_bench,
created if missing; ``BENCH_BROKER_URL``, default redis://127.0.0.1:6379/14). Starts one worker
(``celery -A workers worker -Q similarity -c 1``) on a throw-away Qdrant Edge folder.

Qdrant Edge lets one process open a shard, and the worker holds it; so this process does not
query the index but polls the index state the worker writes right after upserting and flushing
the points (``IndexState``: status ``indexed`` with the new content hash). With a Qdrant server
both could query; none runs on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/similarity_bench"
DEFAULT_BROKER = "redis://127.0.0.1:6379/14"


def _ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def run(trials: int) -> dict[str, Any]:
    db_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    broker = os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER)
    _ensure_database(db_url)
    workdir = Path(tempfile.mkdtemp(prefix="similarity-bench-celery-"))
    env = {**os.environ, "DATABASE_URL": db_url, "CELERY_BROKER_URL": broker, "VAR_DIR": str(workdir),
           "DJANGO_SETTINGS_MODULE": "config.settings", "SIMILARITY_LOG": "WARNING"}
    env.pop("QDRANT_URL", None)
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "CELERY_BROKER_URL", "VAR_DIR",
                                           "DJANGO_SETTINGS_MODULE", "SIMILARITY_LOG")})
    os.environ.pop("QDRANT_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from catalog.models import Product
    from similarity import registry
    from similarity.models import IndexState, Status
    from similarity.specs import text_hash

    call_command("migrate", verbosity=0)
    from workers.celery import app

    app.control.purge()
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "workers", "worker", "-Q", "similarity", "-c", "1",
         "--loglevel", "WARNING", "-n", f"bench-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        spec = registry.get_spec()
        product = Product.objects.create(sku=f"bench-{os.getpid()}", title="Analog wrist watch",
                                         description="Steel strap, date window", brand="Bench")

        def wait_indexed(expected: str, since: float, timeout: float = 180) -> float:
            while True:
                state = IndexState.objects.filter(model_label=spec.label, object_id=product.pk,
                                                  modality="text").first()
                if state and state.status == Status.INDEXED and state.content_hash == expected:
                    return time.perf_counter() - since
                if time.perf_counter() - since > timeout:
                    raise RuntimeError("the worker did not index the product in time; is it running?")
                time.sleep(0.01)

        # first one includes the worker start and its model loading: reported apart
        first = wait_indexed(text_hash(spec.get_text(product)), time.perf_counter())
        samples = []
        for i in range(trials):
            product.title = f"Analog wrist watch, edition {i}"
            with transaction.atomic():
                product.save()
            committed = time.perf_counter()
            samples.append(wait_indexed(text_hash(spec.get_text(product)), committed))
        Product.objects.filter(pk=product.pk).delete()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    import numpy as np

    ms = np.asarray(samples) * 1000
    return {"first_including_worker_start_s": first, "n": len(samples), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max()), "broker": broker,
            "database": "postgresql"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.celery_freshness")
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.trials)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
