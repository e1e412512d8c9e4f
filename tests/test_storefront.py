"""The shop's pages: category listing, product page with the widget, semantic search."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from similarity import registry, services
from tests import factories

pytestmark = pytest.mark.django_db

UNREACHABLE_QDRANT = {
    "BACKEND": "similarity.index.qdrant.QdrantServerIndex", "URL": "http://127.0.0.1:9", "TIMEOUT": 1,
}


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    cache.clear()


@pytest.fixture
def shop() -> dict[str, Any]:
    watches = "Watches > Wrist Watches"
    towels = "Home Furnishing > Bath Linen > Towels"
    items = {
        "steel": factories.product("Analog steel wrist watch for men", brand="Timex", category_path=watches,
                                   description="Round dial, stainless steel strap, water resistant",
                                   image=factories.png_bytes((90, 90, 90), (800, 800)), price="1499.00"),
        "leather": factories.product("Leather strap analog watch for women", brand="Titan",
                                     category_path=watches, description="Brown leather strap, gold dial",
                                     image=factories.png_bytes((120, 70, 30), (800, 800)), price="2199.00"),
        "digital": factories.product("Digital sports watch", brand="Casio", category_path=watches,
                                     description="Stopwatch, alarm, rubber strap", price="999.00"),
        "towel": factories.product("Cotton bath towel", brand="Sathiyas", category_path=towels,
                                   description="Soft absorbent towel, pack of 3", price="449.00"),
    }
    services.index_products([p.pk for p in items.values()])
    return items


def test_home_lists_top_categories(shop: dict[str, Any], client: Client) -> None:
    html = client.get("/").content.decode()
    assert ">Watches</a>" in html and ">Home Furnishing</a>" in html


def test_category_listing_paginates(client: Client) -> None:
    products = [factories.product(f"Mug {n:02d}", category_path="Kitchen > Mugs") for n in range(30)]
    top = products[0].category.parent
    first = client.get(top.get_absolute_url()).content.decode()
    assert first.count("data-product-card") == 24
    assert "page 1 of 2" in first and 'rel="next" href="?page=2"' in first
    second = client.get(top.get_absolute_url() + "?page=2").content.decode()
    assert second.count("data-product-card") == 6 and "Mug 29" in second
    assert client.get(top.get_absolute_url() + "?page=99").content.decode().count("data-product-card") == 6


def test_product_page_shows_thumbnails_not_full_size_images(shop: dict[str, Any], client: Client) -> None:
    html = client.get(shop["steel"].get_absolute_url()).content.decode()
    assert "Analog steel wrist watch for men" in html and "₹1,499" in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert sources, html
    assert all(src.startswith("/media/thumbs/") for src in sources)
    assert shop["steel"].images.first().image.url not in html


def test_product_page_has_the_widget_with_similar_products(shop: dict[str, Any], client: Client) -> None:
    html = client.get(shop["steel"].get_absolute_url()).content.decode()
    pks = [int(pk) for pk in re.findall(r'data-similar-card data-pk="(\d+)"', html)]
    assert pks[:2] and set(pks[:2]) <= {shop["leather"].pk, shop["digital"].pk}
    assert shop["steel"].pk not in pks
    assert "data-fallback" not in html


def test_product_page_queries_are_bounded_and_no_encoder_loads(
    shop: dict[str, Any], client: Client, django_assert_num_queries: Any,
) -> None:
    registry.reset(encoders=True)
    url = shop["steel"].get_absolute_url()
    # product (+category chain), its images, the widget's neighbours, their images, the stamp;
    # the behaviour widgets (docs/behaviour.md): cold, the live model, each widget's content
    # neighbours and the session's creation; warm, each widget's cached products and their images
    # (2 each) and the session read (1); and the merchandising version, once per widget (with a
    # process-local cache it is read from the database: docs/staff-tools.md)
    from similarity.training import adapt

    # the live adapter is looked up at most every 5 s (3 queries with its savepoint): pinned to
    # "none" here, so the count does not depend on how long the test took to get here
    with adapt.using(None), django_assert_num_queries(26):
        cold = client.get(url)
    with adapt.using(None), django_assert_num_queries(11):
        warm = client.get(url)
    assert cold.status_code == warm.status_code == 200
    assert not [key for key in registry._cache if key.startswith(("text:", "image:"))]


def test_product_page_survives_an_unavailable_index(
    shop: dict[str, Any], client: Client, settings: Any,
) -> None:
    settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": UNREACHABLE_QDRANT}
    response = client.get(shop["steel"].get_absolute_url())
    html = response.content.decode()
    assert response.status_code == 200
    assert "More in this category" in html
    assert {shop["leather"].pk, shop["digital"].pk} == {
        int(pk) for pk in re.findall(r'data-similar-card data-pk="(\d+)"', html)
    }


def test_search_finds_products_by_meaning(shop: dict[str, Any], client: Client) -> None:
    html = client.get("/search/", {"q": "timepiece to wear on the wrist"}).content.decode()
    titles = re.findall(r'<span class="title">([^<]+)</span>', html)
    assert titles[-1] == "Cotton bath towel"  # every product comes back, the towel last
    assert "watch" in titles[0].lower()


def test_search_with_an_empty_query_and_with_the_index_down(
    shop: dict[str, Any], client: Client, settings: Any,
) -> None:
    assert "Type what you are looking for" in client.get("/search/", {"q": "   "}).content.decode()
    settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": UNREACHABLE_QDRANT}
    response = client.get("/search/", {"q": "watch"})
    assert response.status_code == 200
    assert "Search is unavailable right now" in response.content.decode()


def test_thumbnails_are_made_once(shop: dict[str, Any], client: Client, settings: Any) -> None:
    url = shop["steel"].get_absolute_url()
    client.get(url)
    started = time.perf_counter()
    html = client.get(url).content.decode()
    assert time.perf_counter() - started < 5
    for src in set(re.findall(r'<img src="(/media/thumbs/[^"]+)"', html)):
        assert "_" not in src.rsplit("/", 1)[-1], "a second copy was written instead of reusing it"


def _redis_cache(port: int) -> dict[str, Any]:
    return {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                        "LOCATION": f"redis://127.0.0.1:{port}/0",
                        "OPTIONS": {"socket_connect_timeout": 0.3, "socket_timeout": 0.3}}}


def test_product_page_with_the_cache_down_still_shows_similar_products(
    shop: dict[str, Any], client: Client, settings: Any, caplog: Any,
) -> None:
    """Redis (the cache) refuses connections: the page renders from the index and the database,
    and after the first failure the cache is not tried again for a while (one warning)."""
    from similarity import breaker

    settings.CACHES = _redis_cache(9)  # nothing listens on port 9
    try:
        with caplog.at_level(logging.WARNING, logger="similarity.cache_guard"):
            for _ in range(3):
                response = client.get(shop["steel"].get_absolute_url())
                assert response.status_code == 200
                pks = [int(pk) for pk in re.findall(r'data-similar-card data-pk="(\d+)"', response.content.decode())]
                assert set(pks[:2]) <= {shop["leather"].pk, shop["digital"].pk} and pks[:2]
        assert len([r for r in caplog.records if r.name == "similarity.cache_guard"]) == 1
    finally:
        breaker.close()


def test_product_page_with_a_hung_cache_waits_one_timeout_not_one_per_call(
    shop: dict[str, Any], client: Client, settings: Any,
) -> None:
    """A Redis that accepts connections and never answers (the deploy docs' socket timeouts set):
    the first page waits for the timeout once; the next pages do not wait on the cache at all."""
    import time

    from similarity import breaker
    from tests.hung import connections_made, hung_port

    try:
        with hung_port() as hung:
            settings.CACHES = _redis_cache(hung.getsockname()[1])
            url = shop["steel"].get_absolute_url()
            started = time.monotonic()
            assert client.get(url).status_code == 200
            first = time.monotonic() - started
            for _ in range(3):
                assert client.get(url).status_code == 200
            assert 0.25 < first < 30, "one socket timeout, not a hang"
            assert connections_made(hung) == 1, "with the breaker open no later page tried the hung cache"
    finally:
        breaker.close()
