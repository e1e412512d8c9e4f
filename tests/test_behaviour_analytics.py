"""The widget beacon's counters: buffered in the cache (local memory and a real Redis), flushed
into ``WidgetStat`` by the periodic task and the admin page, and never losing a count."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.checks import run_checks
from django.test import override_settings
from django.utils import timezone

from similarity import breaker, cache_guard, services, tasks
from similarity.behaviour import analytics
from similarity.behaviour.models import WidgetStat
from tests.hung import connections_made, hung_port

from . import factories

pytestmark = pytest.mark.django_db

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "beacon-test"}


def _buffered(cache_settings: dict[str, Any], buffer: bool | None = None) -> override_settings:
    return override_settings(
        CACHES={**settings.CACHES, "beacon": cache_settings},
        SIMILARITY={**settings.SIMILARITY, "BEACON_CACHE": "beacon", "BEACON_BUFFER": buffer},
    )


@pytest.fixture(autouse=True)
def _breaker_closed() -> Iterator[None]:
    yield
    breaker.close()  # a test that took a cache down leaves no open breaker to the next


@pytest.fixture
def locmem() -> Iterator[Any]:
    with _buffered(LOCMEM, buffer=True):
        caches["beacon"].clear()
        yield caches["beacon"]


@pytest.fixture
def redis_cache() -> Iterator[Any]:
    # buffering chosen by the backend (auto)
    with factories.private_redis_cache(REDIS_URL, "beacon") as cache_settings, _buffered(cache_settings):
        yield caches["beacon"]


def stats() -> dict[tuple[str, str, str], tuple[int, int]]:
    return {(r.widget, r.placement, r.day.isoformat()): (r.impressions, r.clicks) for r in WidgetStat.objects.all()}


def hit(client: Any, widget: str = "bought_together", placement: str = "product", event: str = "i") -> None:
    assert client.post(f"/similarity/beacon?w={widget}&p={placement}&e={event}").status_code == 204


def test_a_per_process_cache_counts_straight_in_the_database(client: Any) -> None:
    with _buffered(LOCMEM):  # auto: local memory is not shared between processes
        assert not analytics.buffered()
        hit(client)
    assert stats() == {("bought_together", "product", timezone.now().date().isoformat()): (1, 0)}


def test_buffered_hits_reach_the_database_on_flush_and_the_admin_page(locmem: Any, client: Any,
                                                                      admin_client: Any) -> None:
    today = timezone.now().date().isoformat()
    for event in "iiiic":
        hit(client, event=event)
    hit(client, "trending", "home page / top", "i")
    assert stats() == {}  # nothing written during the requests
    assert services.flush_widget_stats() == {"flushed": 6, "days": 1}
    assert stats() == {("bought_together", "product", today): (4, 1), ("trending", "home page / top", today): (1, 0)}
    assert services.flush_widget_stats()["flushed"] == 0  # moved once, not twice
    hit(client, event="c")
    page = admin_client.get("/admin/similarity/widgetstat/").content.decode()
    assert "50%" in page  # 2 clicks / 4 impressions: the admin flushed the newest click first
    assert stats()[("bought_together", "product", today)] == (4, 2)


def test_hits_arriving_during_a_flush_are_kept(locmem: Any, client: Any, monkeypatch: Any) -> None:
    for _ in range(3):
        hit(client)
    read = locmem.get_many

    def read_then_more_hits(keys: list[str]) -> dict[str, Any]:
        values = read(keys)
        if any(key.endswith(":i") for key in keys):
            hit(client)
            hit(client)  # after the flush read the counter, before it claimed
        return values

    monkeypatch.setattr(locmem, "get_many", read_then_more_hits)
    assert services.flush_widget_stats()["flushed"] == 3
    monkeypatch.setattr(locmem, "get_many", read)
    assert services.flush_widget_stats()["flushed"] == 2
    assert list(stats().values()) == [(5, 0)]


def test_overlapping_flushes_count_nothing_twice(locmem: Any, client: Any, monkeypatch: Any) -> None:
    """Should the lock have expired, a second flush may run between the first one's read and its
    claim: the first one then finds the counter below zero and gives that back."""
    for _ in range(4):
        hit(client)
    read, nested = locmem.get_many, []

    def another_flush_in_between(keys: list[str]) -> dict[str, Any]:
        values = read(keys)
        if any(key.endswith(":i") for key in keys) and not nested:
            nested.append(None)
            nested[0] = analytics._flush_day(locmem, timezone.now().date())
            hit(client)
        return values

    monkeypatch.setattr(locmem, "get_many", another_flush_in_between)
    first = analytics._flush_day(locmem, timezone.now().date())
    monkeypatch.setattr(locmem, "get_many", read)
    assert (nested, first) == ([4], 1)  # the late hit, not the 4 the other flush took
    assert services.flush_widget_stats()["flushed"] == 0
    assert list(stats().values()) == [(5, 0)]


def test_a_failed_database_write_gives_the_counts_back(locmem: Any, client: Any, monkeypatch: Any) -> None:
    hit(client)
    hit(client, event="c")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(analytics, "add_to_database", broken)
    with pytest.raises(RuntimeError):
        services.flush_widget_stats()
    monkeypatch.undo()
    assert stats() == {}
    assert services.flush_widget_stats()["flushed"] == 2
    assert list(stats().values()) == [(1, 1)]


def test_the_admin_page_opens_when_the_flush_fails(locmem: Any, admin_client: Any, monkeypatch: Any) -> None:
    def broken() -> dict[str, Any]:
        raise ConnectionError("cache down")

    monkeypatch.setattr(services, "flush_widget_stats", broken)
    page = admin_client.get("/admin/similarity/widgetstat/")
    assert page.status_code == 200 and "could not be read from the cache" in page.content.decode()


def test_old_days_are_flushed_then_dropped_from_the_cache(locmem: Any) -> None:
    today = timezone.now().date()
    old = today - timedelta(days=3)
    analytics.count_in_cache(old, "trending", "home", "i")
    analytics.count_in_cache(old, "trending", "home", "c")
    analytics.count_in_cache(today, "trending", "home", "i")
    assert services.flush_widget_stats() == {"flushed": 3, "days": 4}  # from the first day counted
    assert stats() == {("trending", "home", old.isoformat()): (1, 1), ("trending", "home", today.isoformat()): (1, 0)}
    assert locmem.get(f"{analytics.PREFIX}:{old.isoformat()}:n") is None
    assert locmem.get(analytics.MARK) == (today - timedelta(days=1)).isoformat()
    assert services.flush_widget_stats() == {"flushed": 0, "days": 2}


def test_the_periodic_task_flushes_and_is_scheduled(locmem: Any, client: Any) -> None:
    hit(client, "recommended_for_you", "cart", "c")
    assert tasks.flush_widget_stats.delay().get() == {"flushed": 1, "days": 1}
    assert list(stats().values()) == [(0, 1)]
    entry = settings.CELERY_BEAT_SCHEDULE["similarity-widget-stats"]
    assert entry["task"] == "similarity.flush_widget_stats" and entry["schedule"] <= 60


def test_redis_counts_concurrent_hits_exactly_while_flushing(redis_cache: Any) -> None:
    assert analytics.buffered()  # auto: Redis is shared and increments atomically
    day = timezone.now().date()
    per_thread, threads = 200, 4

    def hits(n: int) -> None:
        for i in range(per_thread):
            analytics.count("bought_together", f"p{n % 2}", "c" if i % 10 == 0 else "i")

    workers = [threading.Thread(target=hits, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    flushes = 0
    while any(worker.is_alive() for worker in workers):
        flushes += 1
        services.flush_widget_stats()
    for worker in workers:
        worker.join()
    services.flush_widget_stats()
    assert flushes > 1
    per_placement = (per_thread * 2 * 9 // 10, per_thread * 2 // 10)
    assert stats() == {("bought_together", "p0", day.isoformat()): per_placement,
                       ("bought_together", "p1", day.isoformat()): per_placement}


def _redis_at(port: int) -> dict[str, Any]:
    return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 0.3, "socket_timeout": 0.3}}  # as docs/deploy.md asks


def test_a_redis_that_is_down_leaves_the_count_to_the_database(client: Any, admin_client: Any,
                                                               caplog: Any) -> None:
    """Nothing listens on port 9: every hit answers 204 and is counted in the database; after the
    first failure the breaker keeps the beacon off the cache (one warning); the admin page opens."""
    with _buffered(_redis_at(9)), caplog.at_level(logging.WARNING, logger="similarity.cache_guard"):
        assert analytics.buffered()
        for event in "iic":
            hit(client, event=event)
        assert breaker.is_open(cache_guard.label("beacon"))
        page = admin_client.get("/admin/similarity/widgetstat/")
        assert page.status_code == 200 and "could not be read from the cache" in page.content.decode()
    assert list(stats().values()) == [(2, 1)]
    assert len([r for r in caplog.records if r.name == "similarity.cache_guard"]) == 1


def test_a_hung_redis_costs_one_timeout_then_the_database_counts(client: Any, admin_client: Any) -> None:
    """A Redis that accepts connections and never answers: the first hit waits its socket timeout
    once and is counted in the database; the next hits do not touch the cache; nothing is lost."""
    with hung_port() as hung, _buffered(_redis_at(hung.getsockname()[1])):
        started = time.monotonic()
        hit(client)
        first = time.monotonic() - started
        started = time.monotonic()
        for event in "iiic":
            hit(client, event=event)
        later = time.monotonic() - started
        connections = connections_made(hung)
        assert 0.25 < first < 30, "one socket timeout, not a hang"
        assert later < 0.25 * 4, "with the breaker open no hit waited on the hung cache"
        assert connections == 1, "with the breaker open no later hit tried the hung cache"
        assert list(stats().values()) == [(4, 1)]
        # the admin page's flush is not behind the breaker: it meets the timeout, warns, opens
        page = admin_client.get("/admin/similarity/widgetstat/")
        assert page.status_code == 200 and "could not be read from the cache" in page.content.decode()


def test_the_first_hit_after_the_breaker_tries_the_cache_again(redis_cache: Any, client: Any) -> None:
    breaker.trip(cache_guard.label("beacon"), "down a moment ago")
    hit(client)  # breaker open: the database counts it, the cache is not touched
    assert list(stats().values()) == [(1, 0)]
    breaker.close(cache_guard.label("beacon"))  # BREAKER_SECONDS later
    hit(client)
    assert list(stats().values()) == [(1, 0)]  # in the cache now
    assert services.flush_widget_stats()["flushed"] == 1 and list(stats().values()) == [(2, 0)]


def test_an_unknown_beacon_cache_is_a_system_check_error() -> None:
    with override_settings(SIMILARITY={**settings.SIMILARITY, "BEACON_CACHE": "nope"}):
        assert "similarity.E013" in {e.id for e in run_checks()}


def test_staff_without_permission_neither_sees_nor_flushes(locmem: Any, client: Any) -> None:
    from django.contrib.auth.models import User

    hit(client)
    staff = User.objects.create_user("clerk", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/similarity/widgetstat/").status_code == 403
    assert stats() == {} and services.flush_widget_stats()["flushed"] == 1


def test_a_counter_whose_listing_failed_is_listed_by_the_next_hit(locmem: Any, client: Any,
                                                                  monkeypatch: Any) -> None:
    listing = analytics._list

    def fails(*args: Any) -> None:
        raise ConnectionError("dropped between the increment and the listing")

    monkeypatch.setattr(analytics, "_list", fails)
    hit(client)
    monkeypatch.setattr(analytics, "_list", listing)
    assert breaker.is_open(cache_guard.label("beacon"))  # a transport error: the cache is left alone a while
    breaker.close()  # BREAKER_SECONDS later
    assert stats() == {}  # counted in the cache, not twice
    assert services.flush_widget_stats()["flushed"] == 0  # not on the list yet
    hit(client)
    assert services.flush_widget_stats()["flushed"] == 2
    hit(client)  # listed once: no second slot
    assert locmem.get(f"{analytics.PREFIX}:{timezone.now().date().isoformat()}:n") == 1
    assert services.flush_widget_stats()["flushed"] == 1 and list(stats().values()) == [(3, 0)]
