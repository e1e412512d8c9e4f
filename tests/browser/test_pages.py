"""What people see in a real browser: the widget on a product page, the admin panel, the
explorer's visual search."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import save_docs_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def norm(text: str) -> str:
    """Text as a browser shows it (runs of spaces collapsed)."""
    return " ".join(text.split())


def is_watch(title: str) -> bool:
    return "watch" in title.lower()


def test_product_page_shows_widget_with_working_links(page: Any, indexed_shop: dict[str, Any]) -> None:
    watch = indexed_shop["watches"][0]
    page.goto(watch.get_absolute_url())
    assert page.locator("h1").inner_text() == norm(watch.title)
    cards = page.locator("[data-similar-widget]:not(.behaviour-widget) [data-similar-card]")
    assert cards.count() == 8
    assert page.locator("[data-similar-widget][data-fallback]").count() == 0
    titles = cards.locator(".similar-title").all_inner_texts()
    assert sum(map(is_watch, titles)) >= 6, titles  # a watch's neighbours are mostly watches
    # Thumbnails, loaded by the browser, and small.
    page.wait_for_load_state("networkidle")
    sizes = cards.locator("img").evaluate_all("imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == 8 and all(0 < max(w, h) <= 240 for w, h in sizes), sizes
    links = cards.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    for href in links:
        assert page.request.get(href).status == 200, href
    save_docs_screenshot(page, "product-page.png", full_page=True)
    # Following a card lands on that product's page.
    first_title = titles[0]
    cards.first.locator("a").click()
    page.wait_for_url(f"**{links[0]}")
    assert page.locator("h1").inner_text() == first_title


def test_search_box_finds_watches(page: Any, indexed_shop: dict[str, Any]) -> None:
    page.goto("/")
    page.fill("input[name=q]", "analog wrist watch for men")
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**/search/?q=*")
    titles = page.locator("[data-search-results] .title").all_inner_texts()
    assert titles and all(is_watch(t) for t in titles[:5]), titles


def test_admin_product_page_shows_the_similarity_panel(
    page: Any, indexed_shop: dict[str, Any], admin_login: dict[str, str],
) -> None:
    watch = indexed_shop["watches"][1]
    page.goto(f"/admin/catalog/product/{watch.pk}/change/")
    panel = page.locator("[data-similarity-panel]")
    panel.wait_for()
    assert panel.locator("[data-index-state] tbody tr").count() == 2
    assert panel.locator(".status-indexed").count() == 2
    hits = panel.locator("[data-similarity-hit]")
    assert hits.count() == 12
    scores = hits.first.locator(".scores").inner_text()
    assert "image" in scores and "text" in scores
    page.wait_for_load_state("networkidle")
    save_docs_screenshot(panel, "admin-panel.png")
    # "Reindex now" goes round the real path and comes back with a message.
    panel.locator("input[value='Reindex now']").click()
    page.wait_for_url(f"**/admin/catalog/product/{watch.pk}/change/")
    assert "queued for re-indexing" in page.locator(".messagelist").inner_text()
    # A neighbour's link opens that product's change page.
    first = page.locator("[data-similarity-hit] a").first
    title = first.inner_text()
    first.click()
    page.wait_for_url("**/change/")
    assert norm(page.locator("#id_title").input_value()) == norm(title)


def test_explorer_finds_watches_for_a_photo_of_a_watch(
    page: Any, indexed_shop: dict[str, Any], admin_login: dict[str, str],
) -> None:
    page.goto("/admin/similarity/indexstate/explorer/")
    page.set_input_files("#id_photo", str(indexed_shop["probe_photo"]))
    page.click("input[type=submit][value=Search]")
    results = page.locator("[data-explorer-results]")
    results.wait_for()
    titles = results.locator("[data-similarity-hit] a").filter(has_not_text="view on site").all_inner_texts()
    assert len(titles) >= 5
    assert sum(map(is_watch, titles[:5])) >= 4, titles[:5]
    save_docs_screenshot(page, "explorer.png")


def test_explorer_shows_a_form_error_for_a_non_image(
    page: Any, indexed_shop: dict[str, Any], admin_login: dict[str, str], tmp_path: Any,
) -> None:
    fake = tmp_path / "watch.jpg"
    fake.write_text("not really a photo")
    page.goto("/admin/similarity/indexstate/explorer/")
    page.set_input_files("#id_photo", str(fake))
    page.click("input[type=submit][value=Search]")
    assert "cannot be read as an image" in page.locator(".errorlist").inner_text()
    assert page.locator("[data-explorer-results]").count() == 0
