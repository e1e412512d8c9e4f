"""End to end with a real Celery worker on Redis and PostgreSQL.

Products are created in one transaction; after commit one task goes through Redis to a worker
process, which encodes with the real models and writes to Qdrant Edge; then ``find_similar``
in this process returns them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection, transaction

from similarity import services
from similarity.models import IndexState
from tests import factories

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def celery_on_redis(settings, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("needs DATABASE_URL pointing at PostgreSQL (the worker must see committed rows)")
    if not _redis_up():
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    from workers.celery import app

    var = tmp_path / "var"
    settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": {
        **settings.SIMILARITY["INDEX"], "PATH": str(var / "qdrant-edge")}}
    db = connection.settings_dict
    env = {
        **os.environ, "CELERY_BROKER_URL": REDIS_URL, "VAR_DIR": str(var),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT), "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": (
            f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
    }
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - outlives this block (the worker writes it)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "similarity", "-c", "1",
         "--pool", "prefork", "-l", "info", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent,
    )
    old = (app.conf.task_always_eager, app.conf.broker_url)
    app.conf.task_always_eager = False
    app.conf.broker_url = REDIS_URL
    app._pool = None
    app.amqp._producer_pool = None
    log_path = tmp_path / "worker.log"
    try:
        yield Worker(log_path, worker)
    finally:
        app.conf.task_always_eager, app.conf.broker_url = old
        app._pool = None
        app.amqp._producer_pool = None
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()


@dataclass
class Worker:
    log: Path
    process: subprocess.Popen[bytes]


def _wait_indexed(pks: list[int], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = IndexState.objects.filter(object_id__in=pks, modality="text", status="indexed").count()
        if done == len(pks):
            return
        time.sleep(0.5)
    raise AssertionError(f"the worker indexed {done} of {len(pks)} products in {timeout:.0f}s")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_indexes_committed_products(celery_on_redis, flipkart, flipkart_rows):
    watches = [r for r in flipkart_rows if r["category"].startswith("Watches")][:4]
    curtains = [r for r in flipkart_rows if "Curtains" in r["category"]][:4]
    with transaction.atomic():
        made = [
            factories.product(r["title"], sku=r["sku"], description=r["description"],
                              category_path=r["category"], image=flipkart / r["image"])
            for r in watches + curtains
        ]
    pks = [p.pk for p in made]
    _wait_indexed(pks)
    log = celery_on_redis.log.read_text()
    assert log.count("similarity.index_products") >= 1
    assert "succeeded" in log
    # Let the worker finish its post-task step (it lets go of the Edge shard).
    time.sleep(1.0)
    result = services.find_similar(made[0], limit=3)
    assert result.ok, result.message
    assert [h.object.category.path.split(" > ")[0] for h in result.hits] == ["Watches"] * 3
    assert IndexState.objects.filter(object_id__in=pks, modality="image", status="indexed").count() == 8


def _pool_child(worker_pid: int) -> int:
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(worker_pid)], capture_output=True, text=True)
    pids = [int(p) for p in children.stdout.split()]
    assert pids, "the prefork worker has no pool child"
    return pids[0]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_pool_child_loses_nothing(celery_on_redis, flipkart, flipkart_rows):
    """kill -9 of the pool child mid-batch: the message goes back to the queue
    (acks_late + reject_on_worker_lost), a new child indexes the batch, and reconcile finds no
    drift."""
    from django.core.management import call_command

    log_path, worker = celery_on_redis.log, celery_on_redis.process
    rows = [r for r in flipkart_rows if r["image"]][:24]
    with transaction.atomic():
        made = [factories.product(r["title"], sku=r["sku"], description=r["description"],
                                  category_path=r["category"], image=flipkart / r["image"]) for r in rows]
    deadline = time.monotonic() + 180  # a loaded machine starts workers slowly
    while "similarity.index_products" not in log_path.read_text():
        assert time.monotonic() < deadline, "the task never reached the worker: " + log_path.read_text()[-3000:]
        time.sleep(0.05)
    time.sleep(1.0)  # the child is loading models / encoding
    os.kill(_pool_child(worker.pid), signal.SIGKILL)
    _wait_indexed([p.pk for p in made], timeout=240)
    log = log_path.read_text()
    assert "WorkerLostError" in log or "exited with signal 9" in log or "signal 9" in log, log[-3000:]
    time.sleep(1.0)  # the worker lets go of the Edge shard after its task
    call_command("similarity_reconcile", "--check")  # raises (exit 1) on any drift
