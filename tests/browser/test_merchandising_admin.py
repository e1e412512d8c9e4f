"""Merchandising in a real browser: drag a neighbour onto the pin box, block one with a click;
the storefront widget follows at once."""

from __future__ import annotations

from typing import Any

import pytest

from ..staff_catalog import fresh_merchandising  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_drag_to_pin_and_click_to_block(
    page: Any, indexed_shop: dict[str, Any], admin_login: dict[str, str],
) -> None:
    watch = indexed_shop["watches"][2]
    # The storefront's similar-products widget (the page's first) first, so its list is cached:
    # the changes below must show anyway.
    page.goto(watch.get_absolute_url())
    before = page.locator("[data-similar-widget]").first.locator("[data-similar-card]").evaluate_all(
        "cards => cards.map(c => c.dataset.pk)")
    assert len(before) == 8

    page.goto(f"/admin/catalog/product/{watch.pk}/change/")
    hits = page.locator("[data-similarity-hit]")
    hits.first.wait_for()
    assert page.locator("[data-category-suggestion]").inner_text().startswith("Suggested: Watches")
    why = hits.first.locator("[data-why]").inner_text()
    assert why, "every hit says why it is shown"

    # Drag the third neighbour onto the pin box: the page reloads with it first, marked pinned.
    third, zone = hits.nth(2), page.locator("[data-pin-zone]")
    pinned_pk = third.get_attribute("data-pk")
    zone.scroll_into_view_if_needed()
    # Mouse steps rather than drag_to: Chromium starts HTML5 drag and drop only after the
    # pointer moves over the target (drag_to alone fired no drop here).
    third.locator(".scores").hover()
    page.mouse.down()
    zone.hover()
    zone.hover(position={"x": 20, "y": 10})
    page.mouse.up()
    page.wait_for_function(
        "pk => document.querySelector('[data-similarity-hit]')?.dataset.pk === pk", arg=pinned_pk)
    first = page.locator("[data-similarity-hit]").first
    assert first.get_attribute("data-pinned") is not None
    assert "pinned" in first.locator("[data-why]").inner_text()

    # One click blocks the second neighbour: gone from the list, listed as blocked.
    second = page.locator("[data-similarity-hit]").nth(1)
    blocked_pk = second.get_attribute("data-pk")
    second.locator("[data-block]").click()
    page.wait_for_url(f"**/admin/catalog/product/{watch.pk}/change/**")
    assert "will not be shown with this one" in page.locator(".messagelist").inner_text()
    shown = page.locator("[data-similarity-hit]").evaluate_all("hits => hits.map(h => h.dataset.pk)")
    assert blocked_pk not in shown and shown[0] == pinned_pk
    assert page.locator(f"[data-blocked] li[data-pk='{blocked_pk}']").count() == 1

    # The shopper's widget shows the change at once, although its list was cached.
    page.goto(watch.get_absolute_url())
    after = page.locator("[data-similar-widget]").first.locator("[data-similar-card]").evaluate_all(
        "cards => cards.map(c => c.dataset.pk)")
    assert after[0] == pinned_pk and blocked_pk not in after and len(after) == 8
