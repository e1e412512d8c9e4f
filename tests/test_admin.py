"""The merchandiser's admin: similar-products panel, reindexing, filters, explorer, health."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from similarity import services
from similarity.admin_views import MAX_UPLOAD_BYTES
from similarity.models import IndexState, Status
from tests import factories

pytestmark = pytest.mark.django_db

EXPLORER = "/admin/similarity/indexstate/explorer/"
HEALTH = "/admin/similarity/indexstate/health/"


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_product", "change_product", *codenames])
    )
    return user


@pytest.fixture
def merchandiser(client: Client) -> Client:
    client.force_login(staff("merch", "view_similarity", "view_index_health", "reindex_objects"))
    return client


@pytest.fixture
def shop() -> dict[str, Any]:
    watches = "Watches > Wrist Watches"
    items = {
        "steel": factories.product("Analog steel wrist watch for men", category_path=watches,
                                   description="Stainless steel strap",
                                   image=factories.png_bytes((90, 90, 90))),
        "leather": factories.product("Leather strap analog watch", category_path=watches,
                                     description="Brown leather strap",
                                     image=factories.png_bytes((140, 80, 40))),
        "towel": factories.product("Cotton bath towel", category_path="Home > Towels",
                                   description="Soft absorbent towel"),
    }
    services.index_products([p.pk for p in items.values()])
    return items


def change_url(product: Any) -> str:
    return f"/admin/catalog/product/{product.pk}/change/"


# -- access -----------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [EXPLORER, HEALTH])
def test_custom_pages_send_anonymous_and_non_staff_to_login(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(User.objects.create_user("shopper", password="pw"))
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize("url", [EXPLORER, HEALTH])
def test_custom_pages_need_their_permission(client: Client, url: str) -> None:
    client.force_login(staff("plain"))
    assert client.get(url).status_code == 403


def test_reindex_needs_login_staff_and_permission(client: Client, shop: dict[str, Any]) -> None:
    url = f"/admin/catalog/product/{shop['steel'].pk}/reindex/"
    assert "/admin/login/" in client.post(url)["Location"]
    client.force_login(staff("plain"))
    assert client.post(url).status_code == 403


def test_permissions_grant_the_pages(merchandiser: Client) -> None:
    assert merchandiser.get(EXPLORER).status_code == 200
    assert merchandiser.get(HEALTH).status_code == 200


# -- product change page ----------------------------------------------------------------------
def test_change_page_shows_similar_products_with_scores_and_index_state(
    merchandiser: Client, shop: dict[str, Any],
) -> None:
    html = merchandiser.get(change_url(shop["steel"])).content.decode()
    assert "Similar products" in html and "Reindex now" in html
    hits = re.findall(r'data-similarity-hit data-pk="(\d+)"', html)
    assert int(hits[0]) == shop["leather"].pk
    assert f'href="{change_url(shop["leather"])}"' in html
    assert re.search(r"· image 0\.\d{3}", html) and re.search(r"· text 0\.\d{3}", html)
    assert html.count('data-modality="') >= 2 and "Indexed" in html
    assert "efficientnet" in html.lower() or "lite0" in html.lower()  # the model version


def test_change_page_without_view_similarity_hides_the_panel_and_button(
    client: Client, shop: dict[str, Any],
) -> None:
    client.force_login(staff("plain"))
    html = client.get(change_url(shop["steel"])).content.decode()
    assert "data-similarity-hit" not in html and "Reindex now" not in html
    assert "data-index-state" in html


def test_change_page_shows_a_failed_image_with_its_error(merchandiser: Client) -> None:
    broken = factories.product("Blue towel", image=b"plain text, not a JPEG", image_name="towel.jpg")
    services.index_products([broken.pk])
    html = merchandiser.get(change_url(broken)).content.decode()
    assert 'class="status-failed">Failed' in html and "not an image file" in html


@pytest.mark.django_db(transaction=True)
def test_reindex_now_indexes_the_product(merchandiser: Client, dispatched: Any, settings: Any) -> None:
    # Saved while nothing consumed the queue (the recorder), so still pending.
    product = factories.product("Steel analog watch", description="A watch")
    assert not IndexState.objects.filter(object_id=product.pk, status=Status.INDEXED).exists()
    settings.SIMILARITY = {**settings.SIMILARITY, "DISPATCHER": "similarity.tasks.dispatch"}
    response = merchandiser.post(f"/admin/catalog/product/{product.pk}/reindex/")
    assert response["Location"] == change_url(product)
    assert IndexState.objects.get(object_id=product.pk, modality="text").status == Status.INDEXED
    html = merchandiser.get(change_url(product)).content.decode()
    assert "was queued for re-indexing" in html
    assert 'class="status-indexed">Indexed' in html


def test_reindex_is_post_only(merchandiser: Client, shop: dict[str, Any]) -> None:
    assert merchandiser.get(f"/admin/catalog/product/{shop['steel'].pk}/reindex/").status_code == 405


# -- changelist --------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_reindex_selected_action_reports_and_indexes(merchandiser: Client, dispatched: Any, settings: Any) -> None:
    products = [factories.product(f"Mug {n}", description="ceramic mug") for n in range(2)]
    settings.SIMILARITY = {**settings.SIMILARITY, "DISPATCHER": "similarity.tasks.dispatch"}
    response = merchandiser.post(
        "/admin/catalog/product/",
        {"action": "reindex_selected", "_selected_action": [p.pk for p in products]}, follow=True,
    )
    assert "2 products queued for re-indexing." in response.content.decode()
    assert IndexState.objects.filter(
        object_id__in=[p.pk for p in products], modality="text", status=Status.INDEXED
    ).count() == 2


def test_reindex_action_needs_the_permission(client: Client, shop: dict[str, Any]) -> None:
    client.force_login(staff("plain"))
    html = client.get("/admin/catalog/product/").content.decode()
    assert "reindex_selected" not in html


def test_changelist_filters_by_index_status(merchandiser: Client, shop: dict[str, Any]) -> None:
    broken = factories.product("Broken picture", image=b"nope", image_name="x.jpg")
    services.index_products([broken.pk])
    unindexed = factories.product("Brand new product")

    def listed(status: str) -> set[str]:
        html = merchandiser.get("/admin/catalog/product/", {"index_status": status}).content.decode()
        return set(re.findall(r'<th class="field-sku"><a href="[^"]+">([^<]+)</a>', html))

    assert listed("failed") == {broken.sku}
    assert unindexed.sku in listed("not_indexed") and shop["steel"].sku not in listed("not_indexed")
    assert shop["steel"].sku in listed("indexed") and broken.sku not in listed("indexed")
    assert unindexed.sku in listed("pending")  # its save is in the outbox


# -- explorer -----------------------------------------------------------------------------------
def test_explorer_finds_by_words(merchandiser: Client, shop: dict[str, Any]) -> None:
    html = merchandiser.post(EXPLORER, {"query": "wrist watch"}).content.decode()
    hits = [int(pk) for pk in re.findall(r'data-similarity-hit data-pk="(\d+)"', html)]
    assert hits[-1] == shop["towel"].pk and set(hits[:2]) == {shop["steel"].pk, shop["leather"].pk}
    assert "by words" in html


def test_explorer_finds_by_photo(merchandiser: Client, shop: dict[str, Any]) -> None:
    photo = SimpleUploadedFile("mine.png", factories.png_bytes((140, 80, 40)), content_type="image/png")
    html = merchandiser.post(EXPLORER, {"photo": photo}).content.decode()
    hits = [int(pk) for pk in re.findall(r'data-similarity-hit data-pk="(\d+)"', html)]
    assert hits[0] == shop["leather"].pk  # the same picture
    assert shop["towel"].pk not in hits  # no picture: not in an image search
    assert "by photo" in html and re.search(r"· image (0\.99\d|1\.000)", html)


def test_explorer_refuses_a_file_that_is_not_an_image(merchandiser: Client, shop: dict[str, Any]) -> None:
    fake = SimpleUploadedFile("watch.jpg", b"%PDF-1.4 definitely not a photo", content_type="image/jpeg")
    response = merchandiser.post(EXPLORER, {"photo": fake})
    html = response.content.decode()
    assert response.status_code == 200
    assert "This file cannot be read as an image" in html and "data-explorer-results" not in html


def test_explorer_refuses_other_types_and_big_files(merchandiser: Client) -> None:
    text = SimpleUploadedFile("notes.txt", b"hello", content_type="text/plain")
    assert "is not a photo" in merchandiser.post(EXPLORER, {"photo": text}).content.decode()
    big = SimpleUploadedFile("big.jpg", b"\0" * (MAX_UPLOAD_BYTES + 1), content_type="image/jpeg")
    assert "the limit is 8 MB" in merchandiser.post(EXPLORER, {"photo": big}).content.decode()
    assert "Type some words or choose a photo" in merchandiser.post(EXPLORER, {}).content.decode()


# -- health -------------------------------------------------------------------------------------
def test_health_page_counts_and_errors(merchandiser: Client, shop: dict[str, Any]) -> None:
    broken = factories.product("Broken picture", image=b"nope", image_name="x.jpg")
    services.index_products([broken.pk])
    factories.product("Waiting product")
    html = merchandiser.get(HEALTH).content.decode()
    text_row = re.search(r'<tr data-modality="text">(.*?)</tr>', html).group(1)
    assert '<td data-status="indexed">4</td>' in text_row
    image_row = re.search(r'<tr data-modality="image">(.*?)</tr>', html).group(1)
    assert '<td data-status="failed">1</td>' in image_row and '<td data-status="indexed">2</td>' in image_row
    assert "x.jpg: not an image file" in html
    assert re.search(r"data-pending>\d+<", html) and "oldest" in html
    assert "<strong data-unindexed>1</strong>" in html
