"""The embedded index and a second process: the second is refused in one clear line and never
touches the shard, so the process that holds it keeps writing (qdrant/qdrant#10336)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from similarity.exceptions import IndexUnavailable
from similarity.index.base import PointData
from similarity.index.edge import QdrantEdgeIndex

ROOT = Path(django_settings.BASE_DIR)
DIMS = {"image": 4, "text": 4}
SCHEMA = {"pk": "keyword", "group": "keyword", "model": "keyword"}


def point(n: int) -> PointData:
    v = [1.0, float(n % 7), 0.5, 0.0]
    return PointData(f"00000000-0000-0000-0000-{n:012d}", {"image": v, "text": v}, {"pk": str(n)})


def other_process(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"}
    prelude = "import django; django.setup()\nfrom similarity.index.edge import QdrantEdgeIndex\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_second_process_is_refused_and_the_holder_keeps_writing(tmp_path: Path) -> None:
    holder = QdrantEdgeIndex(path=str(tmp_path), collection="c", lock_timeout=1)
    holder.ensure(DIMS, SCHEMA)
    holder.upsert([point(1)])
    for attempt in range(3):
        refused = other_process(
            f"index = QdrantEdgeIndex(path={str(tmp_path)!r}, collection='c', lock_timeout=0.3)\n"
            "try:\n    index.count()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
        )
        assert refused.returncode == 0, refused.stderr
        assert refused.stdout.startswith("IndexUnavailable"), refused.stdout
        assert f"open in another process (pid {os.getpid()})" in refused.stdout
        # Before the lock, this next write failed: "tracker_journal.dat is shorter than expected".
        holder.upsert([point(n) for n in range(10 * attempt + 2, 10 * attempt + 12)])
        holder.delete([point(10 * attempt + 2).id])
    assert holder.count() == 1 + 3 * 9
    holder.close()
    # Let go, and the other process may open it.
    after = other_process(f"print(QdrantEdgeIndex(path={str(tmp_path)!r}, collection='c').count())")
    assert after.stdout.strip() == str(1 + 3 * 9), after.stderr


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    QdrantEdgeIndex(path=str(tmp_path), collection="c").ensure(DIMS, SCHEMA)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"}
    code = (
        "import django, sys, time; django.setup()\nfrom similarity.index.edge import QdrantEdgeIndex\n"
        f"i = QdrantEdgeIndex(path={str(tmp_path)!r}, collection='c'); i.count(); print('holding', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        with pytest.raises(IndexUnavailable, match=f"pid {proc.pid}"):
            QdrantEdgeIndex(path=str(tmp_path), collection="c", lock_timeout=0.2).count()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    index = QdrantEdgeIndex(path=str(tmp_path), collection="c", lock_timeout=2)
    index.upsert([point(1)])
    assert index.count() == 1
    index.close()


@pytest.mark.slow
def test_manage_py_similar_while_the_site_holds_the_index_says_so_in_one_line(tmp_path: Path) -> None:
    """A real site process (indexing in-process) holds the shard; `manage.py similar` in another
    process exits 1 with one line, and the site keeps indexing afterwards."""
    env = {**os.environ, "VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings",
           "HF_HUB_OFFLINE": "1"}
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "QDRANT_URL"):
        env.pop(key, None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    site = (
        "import sys, time\n"
        "from catalog.models import Product\nfrom similarity import services\n"
        "a = Product.objects.create(sku='W1', title='Steel wrist watch')\n"
        "b = Product.objects.create(sku='W2', title='Digital wrist watch')\n"
        "print('ready', services.find_similar(a).status, flush=True)\n"
        "sys.stdin.readline()\n"
        "c = Product.objects.create(sku='W3', title='Leather watch strap')\n"
        "print('after', services.find_similar(c).status, len(services.find_similar(c).hits), flush=True)\n"
    )
    proc = subprocess.Popen([*manage, "shell", "-v", "0", "-c", site], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().split()[-2:] == ["ready", "ok"]
        started = time.monotonic()
        refused = subprocess.run([*manage, "similar", "W1"], cwd=ROOT, env=env, capture_output=True,
                                 text=True, timeout=120)
        assert refused.returncode == 1
        errors = [line for line in refused.stderr.splitlines() if line.startswith("CommandError")]
        assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert f"is open in another process (pid {proc.pid})" in errors[0] and "QDRANT_URL" in errors[0]
        assert time.monotonic() - started < 60
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
        assert "after ok 2" in out, err
    finally:
        if proc.poll() is None:
            proc.kill()
