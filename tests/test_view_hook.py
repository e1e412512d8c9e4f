"""The product view hook with Django's default database sessions: the recent views go to a real
Redis cache under the session key, so a product page saves no session after the visitor's first."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.core.cache import caches
from django.core.checks import run_checks
from django.db import connection
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext

from catalog.models import Product
from similarity import breaker, services
from similarity.behaviour import recording
from similarity.behaviour.recording import RECENT_VIEWS, SESSION_KEY

from . import factories

pytestmark = pytest.mark.django_db

# not 13 (the bench) nor 14 / 15 (other tests); only this test's keys are ever deleted
REDIS_URL = os.environ.get("TEST_VIEWS_REDIS_URL", "redis://127.0.0.1:6379/12")
DB_SESSIONS = "django.contrib.sessions.backends.db"


def _views_in(cache_settings: dict[str, Any], alias: str = "views") -> override_settings:
    return override_settings(
        SESSION_ENGINE=DB_SESSIONS,
        CACHES={**settings.CACHES, alias: cache_settings},
        SIMILARITY={**settings.SIMILARITY, "VIEWS_CACHE": alias},
    )


@pytest.fixture
def redis_views() -> Iterator[Any]:
    with factories.private_redis_cache(REDIS_URL, "views") as cache_settings, _views_in(cache_settings):
        yield caches["views"]


@pytest.fixture(params=["redis", "locmem"])
def any_views(request: Any) -> Iterator[Any]:
    """The views in Redis (a sorted set, one round trip) or in any other cache (a list: locmem)."""
    if request.param == "redis":
        yield request.getfixturevalue("redis_views")
        return
    with _views_in({"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "views-test"}):
        caches["views"].clear()
        yield caches["views"]


@pytest.fixture
def products(dispatched: Any) -> list[Product]:
    """Five products (not encoded: the hook needs rows, not vectors)."""
    return [factories.product(f"Product {i}") for i in range(5)]


def session_writes(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries
            if "django_session" in q["sql"] and q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE"))]


def viewed(client: Any) -> list[str]:
    return [key for key, _seen in services.recent_views(client.session, Product)]


def view(client: Any, product: Product) -> list[str]:
    """The product page; the session rows it wrote."""
    with CaptureQueriesContext(connection) as queries:
        assert client.get(product.get_absolute_url()).status_code == 200
    return session_writes(queries)


def test_only_the_first_view_saves_the_session(redis_views: Any, products: list[Product], client: Any) -> None:
    first, second, third = products[:3]
    assert len(view(client, first)) == 1  # a new visitor: Django creates the session (the cookie's key)
    assert set(client.cookies) == {settings.SESSION_COOKIE_NAME}  # nothing of ours
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert view(client, second) == [] and view(client, third) == [] and view(client, first) == []
    assert viewed(client) == [str(second.pk), str(third.pk), str(first.pk)]
    # the views after the first are in Redis, under a digest of the session key (never the key itself)
    cache_key = recording._cache_key(key)
    assert key not in cache_key
    assert [row[1] for row in recording._read(redis_views, cache_key)] == [str(second.pk), str(third.pk),
                                                                           str(first.pk)]
    ttl = redis_views._cache.get_client().ttl(redis_views.make_and_validate_key(cache_key))
    assert settings.SESSION_COOKIE_AGE - 60 < ttl <= settings.SESSION_COOKIE_AGE
    # the session row holds the first view only: it was never written again
    assert [row[1] for row in SessionStore(key).load()[SESSION_KEY]] == [str(first.pk)]


def test_a_visitor_with_a_session_saves_none(redis_views: Any, products: list[Product], client: Any) -> None:
    session = client.session
    session["cart"] = [1]
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key
    assert [view(client, p) for p in products[:3]] == [[], [], []]
    assert viewed(client) == [str(p.pk) for p in products[:3]]


def test_order_reload_and_repeats(any_views: Any, products: list[Product], client: Any) -> None:
    a, b, c = products[:3]
    for product in (a, b, c, c, b):  # a reload changes nothing; a repeat moves to the end
        view(client, product)
    assert viewed(client) == [str(a.pk), str(c.pk), str(b.pk)]
    times = [seen for _key, seen in services.recent_views(client.session, Product)]
    assert times == sorted(times) and times[-1] == pytest.approx(time.time(), abs=5)


def test_views_are_capped(any_views: Any) -> None:
    """RECENT_VIEWS views are kept, the oldest go first (saved session, no rows needed: the hook
    reads the key)."""
    created = SessionStore()
    created.save()
    session = SessionStore(created.session_key)  # as the session middleware gives it to a request
    request = RequestFactory().get("/")
    request.session = session
    for pk in range(1, RECENT_VIEWS + 6):
        services.record_view(request, Product(pk=pk))
    assert [key for key, _s in services.recent_views(request, Product)] == [
        str(pk) for pk in range(6, RECENT_VIEWS + 6)]
    assert not session.modified


def test_recent_views_merge_the_sessions_own(any_views: Any) -> None:
    """A session that holds views from before (or from while the cache was down) keeps them; a
    product in both counts once, at its newest place."""
    now = int(time.time())
    session = SessionStore()
    session[SESSION_KEY] = [["catalog.product", "1", now - 30], ["catalog.product", "2", now - 20]]
    session.save()
    request = RequestFactory().get("/")
    request.session = SessionStore(session.session_key)
    services.record_view(request, Product(pk=3))
    services.record_view(request, Product(pk=1))
    assert [key for key, _s in services.recent_views(request, Product)] == ["2", "3", "1"]


def test_a_cache_that_is_down_never_breaks_the_page(products: list[Product], client: Any,
                                                    caplog: Any) -> None:
    first, second = products[:2]
    with _views_in({"BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": "redis://127.0.0.1:9/0"}), caplog.at_level(logging.WARNING):
        assert len(view(client, first)) == 1  # no session yet: the first view goes into it, as always
        assert len(view(client, second)) == 1  # status 200: the cache failed, was logged; the session keeps it
        assert viewed(client) == [str(first.pk), str(second.pk)]
    assert "recent views: the cache failed" in caplog.text
    breaker.close()


def test_a_hung_cache_costs_one_timeout_then_the_session_keeps_the_views(products: list[Product], client: Any,
                                                                         caplog: Any) -> None:
    """A Redis that accepts connections and never answers: with the socket timeouts the deploy
    docs ask for, the first view waits once, the breaker opens, and the next pages do not wait."""
    from tests.hung import hung_port

    def redis_at(port: int) -> dict[str, Any]:
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0",
                "OPTIONS": {"socket_connect_timeout": 0.3, "socket_timeout": 0.3}}

    try:
        with hung_port(16) as hung, _views_in(redis_at(hung.getsockname()[1])), caplog.at_level(logging.WARNING):
            view(client, products[0])  # creates the session
            started = time.monotonic()
            view(client, products[1])  # waits for the timeout once, then the session keeps it
            first = time.monotonic() - started
            for product in products[2:]:
                view(client, product)
            assert viewed(client) == [str(p.pk) for p in products]
        assert 0.25 < first < 30, "the hung cache was waited on for its socket timeout, not forever"
        # one failure logged: with the breaker open the later pages did not try the hung cache
        assert caplog.text.count("recent views: the cache failed") == 1
    finally:
        breaker.close()


def test_views_stay_in_the_session_when_asked(products: list[Product], client: Any) -> None:
    first, second = products[:2]
    with override_settings(SESSION_ENGINE=DB_SESSIONS, SIMILARITY={**settings.SIMILARITY, "VIEWS_CACHE": ""}):
        view(client, first)
        assert len(view(client, second)) == 1  # the previous behaviour: a session save per product page
        assert [row[1] for row in client.session[SESSION_KEY]] == [str(first.pk), str(second.pk)]


def test_a_login_keeps_the_views_and_a_logout_drops_them(any_views: Any, products: list[Product],
                                                         client: Any) -> None:
    from django.contrib.auth.models import User

    User.objects.create_user("shopper", password="pw", is_staff=True)
    for product in products[:3]:
        view(client, product)
    before = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert client.post("/admin/login/", {"username": "shopper", "password": "pw"}).status_code == 302
    after = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert after != before  # Django gave the session a new key
    assert viewed(client) == [str(p.pk) for p in products[:3]]
    assert recording._read(any_views, recording._cache_key(before)) == []
    client.post("/admin/logout/")
    assert recording._read(any_views, recording._cache_key(after)) == []
    assert viewed(client) == []


def test_the_views_cache_is_checked(monkeypatch: Any) -> None:
    with override_settings(SIMILARITY={**settings.SIMILARITY, "VIEWS_CACHE": "nope"}):
        assert "similarity.E014" in {m.id for m in run_checks()}
    locmem = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    redis = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    monkeypatch.setenv("WEB_CONCURRENCY", "3")  # several processes, each with its own local memory
    with _views_in(locmem):
        assert "similarity.W015" in {m.id for m in run_checks()}
    with _views_in(redis):
        assert "similarity.W015" not in {m.id for m in run_checks()}
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    with _views_in(locmem):  # one process (the embedded default): its local memory is everyone's
        assert "similarity.W015" not in {m.id for m in run_checks()}


def test_views_stay_in_the_session_without_a_stable_key_or_a_real_cache(products: list[Product]) -> None:
    """A signed-cookie session is the cookie (its key changes with its data); a dummy cache keeps
    nothing: in both the views go into the session, as before the cache."""
    from django.test import Client

    locmem = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "views-test"}
    dummy = {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}
    for engine, cache_settings in (("django.contrib.sessions.backends.signed_cookies", locmem), (DB_SESSIONS, dummy)):
        with _views_in(cache_settings), override_settings(SESSION_ENGINE=engine):
            client = Client()  # its session middleware takes the engine when it is built
            for product in products[:3]:
                view(client, product)
            assert recording.views_cache() is None
            assert [row[1] for row in client.session[SESSION_KEY]] == [str(p.pk) for p in products[:3]]
