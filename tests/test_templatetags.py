"""The ``similarity`` template tags: what a shop page shows, what it costs, how it degrades."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from django.core.cache import cache
from django.template import Context, Template
from PIL import Image

from similarity import pages, registry, services
from tests import factories

pytestmark = pytest.mark.django_db

UNREACHABLE_QDRANT = {
    "BACKEND": "similarity.index.qdrant.QdrantServerIndex", "URL": "http://127.0.0.1:9", "TIMEOUT": 1,
}


def render(source: str, **context: Any) -> str:
    return Template("{% load similarity %}" + source).render(Context(context))


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    cache.clear()


@pytest.fixture
def towels() -> dict[str, Any]:
    """Three towels and a watch, the towels in one category; indexed."""
    path = "Home Furnishing > Bath Linen > Towels"
    colours = ((200, 30, 30), (30, 30, 200), (30, 200, 30))
    red, blue, green = (factories.png_bytes(c, (400, 300)) for c in colours)
    items = {
        "red": factories.product("Red cotton bath towel", description="Soft absorbent cotton towel",
                                 category_path=path, price="449.00", image=red),
        "blue": factories.product("Blue cotton bath towel", description="Absorbent cotton towel",
                                  category_path=path, price="399.00", image=blue),
        "green": factories.product("Green cotton hand towel", description="Small cotton towel",
                                   category_path=path, price="199.00", image=green),
        "watch": factories.product("Analog wrist watch for men", description="Steel strap watch",
                                   category_path="Watches > Wrist Watches", price="1299.00"),
    }
    services.index_products([p.pk for p in items.values()])
    return items


def card_pks(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'data-similar-card data-pk="(\d+)"', html)]


def test_simple_tag_returns_hits_with_per_modality_scores(towels: dict[str, Any]) -> None:
    html = render(
        "{% similar_products product limit=2 as items %}"
        "{% for hit in items %}{{ hit.object.sku }}|{{ hit.score|floatformat:3 }}|"
        "{{ hit.scores.text|floatformat:3 }}|{{ hit.scores.image|floatformat:3 }};{% endfor %}",
        product=towels["red"],
    )
    rows = [row.split("|") for row in html.strip(";").split(";")]
    assert {row[0] for row in rows} == {towels["blue"].sku, towels["green"].sku}
    assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows)
    assert rows[0][3] != ""  # both towels have pictures: an image score too


def test_simple_tag_filters_by_category_and_stock(towels: dict[str, Any]) -> None:
    towels["blue"].in_stock = False
    towels["blue"].save()
    services.index_products([towels["blue"].pk])
    html = render(
        "{% similar_products product limit=8 same_category=True in_stock=True as items %}"
        "{% for hit in items %}{{ hit.object.sku }};{% endfor %}",
        product=towels["red"],
    )
    assert html.strip(";").split(";") == [towels["green"].sku]


def test_widget_renders_cards_with_thumbnails_titles_prices_links(
    towels: dict[str, Any], settings: Any,
) -> None:
    html = render("{% similar_products_widget product limit=3 %}", product=towels["red"])
    assert set(card_pks(html)[:2]) == {towels["blue"].pk, towels["green"].pk}
    assert f'href="/product/{towels["blue"].pk}/"' in html
    assert "Blue cotton bath towel" in html and "₹399" in html
    thumbs = re.findall(r'<img src="([^"]+)"', html)
    assert thumbs and all(src.startswith("/media/thumbs/") and src.endswith(".webp") for src in thumbs)
    # Never the full-size photo: the file behind the card is a small copy.
    for src in thumbs:
        with Image.open(settings.MEDIA_ROOT + src.removeprefix("/media")) as image:
            assert max(image.size) <= 240
    assert "data-fallback" not in html


def test_widget_queries_are_bounded_and_no_encoder_runs(towels: dict[str, Any]) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    registry.reset(encoders=True)  # drop the models indexing loaded: the page must not need them
    template = Template("{% load similarity %}{% similar_products_widget product limit=8 %}")
    product = towels["red"]
    # Per-process lookups, cached in the process: the live adapter's version (for
    # training.adapt.ACTIVE_TTL seconds; read in a savepoint) and the merchandising rules (until
    # staff change one).
    per_process = ("similarity_adapterartifact", "SAVEPOINT", "similarity_pin")
    results: list[str] = []

    def page_queries(render: Any) -> tuple[list[str], list[str]]:
        with CaptureQueriesContext(connection) as captured:
            render()
        sqls = [q["sql"] for q in captured.captured_queries]
        mine = [q for q in sqls if any(t in q for t in per_process)]
        return [q for q in sqls if q not in mine], mine

    # cold: the neighbours, their images, the index stamp to store; cached: the stamp to
    # check, then the neighbours and their images (reloaded, so prices are fresh). And the
    # merchandising version (a staff edit in any process shows on the next render): with the
    # process-local test cache, one primary-key read per render (the cache key and find_similar
    # share it).
    def render() -> None:
        results.append(template.render(Context({"product": product})))

    def version_reads(sqls: list[str]) -> int:
        return len([q for q in sqls if "similarity_merchandisingversion" in q])

    first_queries, first_process = page_queries(render)
    second_queries, second_process = page_queries(render)
    assert (version_reads(first_queries), version_reads(second_queries)) == (1, 1)
    first_queries, second_queries = ([q for q in sqls if "similarity_merchandisingversion" not in q]
                                     for sqls in (first_queries, second_queries))
    assert len(first_queries) == 3 and len(second_queries) == 3, (first_queries, second_queries)
    assert len([q for q in first_process + second_process if "SAVEPOINT" not in q]) <= 2, \
        "per-process lookups are not repeated per page"
    first, second = results
    assert first == second and len(card_pks(first)) == 3
    assert not [key for key in registry._cache if key.startswith(("text:", "image:"))]


def test_cached_result_follows_reindexing_of_a_neighbour(towels: dict[str, Any]) -> None:
    template = "{% similar_products_widget product limit=1 %}"
    [first] = card_pks(render(template, product=towels["red"]))
    assert first in (towels["blue"].pk, towels["green"].pk)
    other = towels["green"] if first == towels["blue"].pk else towels["blue"]
    neighbour = towels["blue"] if first == towels["blue"].pk else towels["green"]
    neighbour.title, neighbour.description = "Digital sports watch", "Water resistant wrist watch"
    neighbour.save()
    services.index_products([neighbour.pk])
    assert card_pks(render(template, product=towels["red"])) == [other.pk]


def test_cached_result_is_served_while_the_index_state_is_unchanged(towels: dict[str, Any]) -> None:
    first = services.similar_for_page(towels["red"], limit=3)
    key = pages.similar_cache_key(registry.get_spec(), towels["red"].pk, {"limit": 3})
    assert cache.get(key) is not None
    second = services.similar_for_page(towels["red"], limit=3)
    assert [h.pk for h in first] == [h.pk for h in second]
    assert [round(h.score, 6) for h in first] == [round(h.score, 6) for h in second]


def test_not_indexed_product_gets_category_fallback_and_a_warning(
    towels: dict[str, Any], caplog: pytest.LogCaptureFixture,
) -> None:
    newcomer = factories.product("Yellow bath towel", category_path="Home Furnishing > Bath Linen > Towels")
    with caplog.at_level(logging.WARNING, logger="similarity"):
        html = render("{% similar_products_widget product limit=8 %}", product=newcomer)
    assert "data-fallback" in html and "More in this category" in html
    assert set(card_pks(html)) == {towels["red"].pk, towels["blue"].pk, towels["green"].pk}
    assert any("not_indexed" in r.getMessage() and "fallback" in r.getMessage() for r in caplog.records)


def test_index_unavailable_gives_category_fallback_and_a_warning(
    towels: dict[str, Any], settings: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": UNREACHABLE_QDRANT}
    with caplog.at_level(logging.WARNING, logger="similarity"):
        html = render("{% similar_products_widget product limit=8 %}", product=towels["red"])
        items = render("{% similar_products product as items %}{{ items|length }}", product=towels["red"])
    assert "data-fallback" in html
    assert set(card_pks(html)) == {towels["blue"].pk, towels["green"].pk}
    assert items == "2"
    assert any("unavailable" in r.getMessage() for r in caplog.records)


def test_fallback_can_be_turned_off(towels: dict[str, Any]) -> None:
    newcomer = factories.product("Yellow bath towel", category_path="Home Furnishing > Bath Linen > Towels")
    html = render(
        "{% similar_products product fallback=False as items %}{{ items|length }}", product=newcomer
    )
    assert html == "0"


def test_broken_image_renders_a_placeholder(towels: dict[str, Any]) -> None:
    towels["blue"].images.all().delete()
    factories.add_image(towels["blue"], b"this is not a picture", name="broken.jpg")
    html = render("{% similar_products_widget product limit=3 %}", product=towels["red"])
    assert towels["blue"].pk in card_pks(html)
    assert "no image" in html


def test_cached_widget_reapplies_in_stock_in_the_database(towels: dict[str, Any]) -> None:
    from django.db import connection

    template = "{% similar_products_widget product limit=3 in_stock=True %}"
    assert towels["blue"].pk in card_pks(render(template, product=towels["red"]))
    with connection.cursor() as cursor:  # out of stock behind the index's back (no reindex yet)
        cursor.execute("UPDATE catalog_product SET in_stock = %s WHERE id = %s", [False, towels["blue"].pk])
    shown = card_pks(render(template, product=towels["red"]))
    assert towels["blue"].pk not in shown and towels["green"].pk in shown


def test_while_the_store_is_down_pages_do_not_wait_on_every_view(
    towels: dict[str, Any], settings: Any,
) -> None:
    """A Qdrant server that accepts connections and never answers: the first view waits for the
    client timeout, the next ones get the fallback at once (circuit breaker)."""
    import time

    from tests.test_changes import HungBroker

    hung = HungBroker()
    try:
        settings.SIMILARITY = {**settings.SIMILARITY, "BREAKER_SECONDS": 30, "INDEX": {
            "BACKEND": "similarity.index.qdrant.QdrantServerIndex", "URL": f"http://127.0.0.1:{hung.port}",
            "TIMEOUT": 1}}
        timings = []
        for _ in range(5):
            started = time.monotonic()
            html = render("{% similar_products_widget product limit=8 %}", product=towels["red"])
            timings.append(time.monotonic() - started)
            assert "data-fallback" in html
    finally:
        hung.close()
    assert max(timings[1:]) < 0.5, timings


def test_a_qdrant_answering_404_is_unavailable_not_a_500(towels: dict[str, Any], settings: Any, client: Any) -> None:
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_any(self) -> None:
            body = b'{"status":{"error":"Not found: Collection `similarity_catalog_product` does not exist!"}}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_any  # noqa: N815 - http.server names them so

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": {
            "BACKEND": "similarity.index.qdrant.QdrantServerIndex", "URL": f"http://127.0.0.1:{server.server_port}"}}
        result = services.find_similar(towels["red"])
        assert result.status == "unavailable" and "404" in result.message
        response = client.get(towels["red"].get_absolute_url())
        assert response.status_code == 200 and "data-fallback" in response.content.decode()
    finally:
        server.shutdown()


def test_a_bad_filter_value_from_a_template_never_breaks_the_page(towels: dict[str, Any]) -> None:
    html = render('{% similar_products_widget product limit=3 same_category="yes" %}', product=towels["red"])
    assert "data-fallback" in html
