"""The admin's security review: object access through the ModelAdmin, no similarity query on a
save or a refused request, read-only index state and outbox, and the explorer's upload limits."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib import admin as django_admin
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import StopUpload
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import resolve
from PIL import Image

from catalog.models import Product
from similarity import admin_views, services
from similarity.admin_views import MAX_UPLOAD_BYTES
from similarity.conf import get_settings
from similarity.encoders.image_decoding import open_image
from similarity.exceptions import EncodingError
from similarity.models import IndexState, PendingChange
from tests import factories

pytestmark = pytest.mark.django_db

EXPLORER = "/admin/similarity/indexstate/explorer/"


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def login(client: Client, *codenames: str) -> Client:
    client.force_login(staff("someone", *codenames))
    return client


@pytest.fixture
def merchandiser(client: Client) -> Client:
    return login(client, "view_product", "change_product", "view_similarity", "reindex_objects")


@pytest.fixture
def find_similar_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Counts the admin's similarity queries (``admin.py`` calls ``services.find_similar``)."""
    calls: list[Any] = []
    real = services.find_similar

    def counting(obj: Any, **kwargs: Any) -> Any:
        calls.append(obj)
        return real(obj, **kwargs)

    monkeypatch.setattr(services, "find_similar", counting)
    return calls


@pytest.fixture
def capture_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Counts what the admin queues for re-indexing (``services.capture_changes``)."""
    calls: list[list[Any]] = []

    def recording(model: Any, pks: Any, **kwargs: Any) -> int:
        calls.append(list(pks))
        return len(calls[-1])

    monkeypatch.setattr(services, "capture_changes", recording)
    return calls


def reindex_url(product: Product) -> str:
    return f"/admin/catalog/product/{product.pk}/reindex/"


def change_url(product: Product) -> str:
    return f"/admin/catalog/product/{product.pk}/change/"


# -- 1. "Reindex now" goes through the ModelAdmin's get_queryset and permissions -----------------
def test_reindex_cannot_reach_an_object_the_admins_queryset_hides(
    merchandiser: Client,
    capture_calls: list[list[Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    visible, hidden = factories.product("Visible mug"), factories.product("Hidden mug")
    product_admin = django_admin.site._registry[Product]
    monkeypatch.setattr(product_admin, "get_queryset", lambda request: Product.objects.exclude(pk=hidden.pk))

    assert merchandiser.post(reindex_url(hidden)).status_code == 404
    assert capture_calls == []
    response = merchandiser.post(reindex_url(visible))
    assert response.status_code == 302 and response["Location"] == change_url(visible)
    assert capture_calls == [[visible.pk]]


def test_reindex_needs_view_permission_on_the_object(client: Client, capture_calls: list[list[Any]]) -> None:
    product = factories.product("Mug")
    login(client, "reindex_objects", "view_similarity")  # may reindex, but may not see products
    assert client.post(reindex_url(product)).status_code == 403
    assert client.post("/admin/catalog/product/999999/reindex/").status_code == 403  # nothing leaks
    assert capture_calls == []


# -- 2. the similarity panel: on GET only, after the permission checks ---------------------------
@pytest.mark.parametrize("title", ["Renamed mug", ""], ids=["saved", "invalid"])
def test_posting_the_change_form_runs_no_similarity_query(
    merchandiser: Client,
    find_similar_calls: list[Any],
    title: str,
) -> None:
    product = factories.product("Mug", sku="MUG-1", description="ceramic")
    page = merchandiser.get(change_url(product))
    assert page.status_code == 200 and find_similar_calls == [product]  # the page still shows it
    find_similar_calls.clear()
    data = {
        "sku": "MUG-1",
        "title": title,
        "description": "ceramic",
        "brand": "",
        "category": "",
        "price": "10.00",
        "in_stock": "on",
        "parent": "",
    }
    for inline in page.context["inline_admin_formsets"]:  # none shown without image permissions
        management = inline.formset.management_form
        data.update({management.add_prefix(name): management[name].value() for name in management.fields})
    response = merchandiser.post(change_url(product), data)
    if title:
        assert response.status_code == 302
        product.refresh_from_db()
        assert product.title == "Renamed mug"
    else:
        assert response.status_code == 200 and "This field is required" in response.content.decode()
    assert find_similar_calls == []


def test_change_page_is_refused_before_any_similarity_query(
    client: Client,
    find_similar_calls: list[Any],
) -> None:
    product = factories.product("Mug")
    login(client, "view_similarity", "reindex_objects")  # no view/change permission on products
    assert client.get(change_url(product)).status_code == 403
    assert find_similar_calls == []


def test_change_page_without_view_similarity_runs_no_query(
    client: Client,
    find_similar_calls: list[Any],
) -> None:
    product = factories.product("Mug")
    login(client, "view_product")
    assert client.get(change_url(product)).status_code == 200
    assert find_similar_calls == []


# -- 3. index state and the outbox are the app's to write ----------------------------------------
@pytest.fixture
def superuser(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("root", password="pw"))
    return client


@pytest.mark.parametrize("model", [IndexState, PendingChange], ids=["indexstate", "pendingchange"])
def test_index_state_and_outbox_are_read_only_even_for_a_superuser(superuser: Client, model: Any) -> None:
    if model is IndexState:
        row = IndexState.objects.create(
            model_label="catalog.product", object_id="7", modality="text", status="indexed", model_version="v1"
        )
        fields = {"model_label": "catalog.product", "object_id": "7", "modality": "text", "status": "failed"}
    else:
        row = PendingChange.objects.create(model_label="catalog.product", object_id="7")
        fields = {"model_label": "catalog.product", "object_id": "8", "action": "remove", "attempts": "0"}
    base = f"/admin/similarity/{model._meta.model_name}/"
    before = model.objects.count()

    changelist = superuser.get(base)
    assert changelist.status_code == 200 and f"{base}{row.pk}/change/" in changelist.content.decode()
    assert f'href="{base}add/"' not in changelist.content.decode()
    assert "delete_selected" not in changelist.content.decode()
    assert superuser.get(f"{base}add/").status_code == 403
    assert superuser.post(f"{base}add/", fields).status_code == 403
    page = superuser.get(f"{base}{row.pk}/change/")  # viewing stays: read-only, no save button
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert superuser.post(f"{base}{row.pk}/change/", fields).status_code == 403
    assert superuser.get(f"{base}{row.pk}/delete/").status_code == 403
    assert superuser.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    superuser.post(base, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"})

    assert model.objects.count() == before
    unchanged = model.objects.get(pk=row.pk)
    assert all(getattr(unchanged, f.name) == getattr(row, f.name) for f in model._meta.fields)


# -- 4. explorer uploads --------------------------------------------------------------------------
class CountingStream:
    """A request body that counts what the server reads of it (a socket: no seeking)."""

    def __init__(self, body: bytes) -> None:
        self._body = io.BytesIO(body)
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._body.read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        line = self._body.readline(size)
        self.bytes_read += len(line)
        return line


def multipart(photo: bytes, name: str = "big.jpg", **fields: str) -> bytes:
    data: dict[str, Any] = {**fields, "photo": SimpleUploadedFile(name, photo, content_type="image/jpeg")}
    return encode_multipart(BOUNDARY, data)


def jpeg_bytes(size: tuple[int, int], color: tuple[int, int, int] = (140, 80, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


@pytest.fixture
def searched_images(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of each photo the explorer hands to ``services.search_image``."""
    sizes: list[tuple[int, int]] = []
    real = services.search_image

    def recording(fp: Any, **kwargs: Any) -> Any:
        with Image.open(fp) as image:
            sizes.append(image.size)
        fp.seek(0)
        return real(fp, **kwargs)

    monkeypatch.setattr(services, "search_image", recording)
    return sizes


def test_explorer_refuses_a_long_body_before_reading_it(
    client: Client,
    searched_images: list[tuple[int, int]],
) -> None:
    login(client, "view_similarity")
    body = multipart(b"\xff\xd8\xff" + b"\0" * (9 * 1024 * 1024))
    stream = CountingStream(body)
    response = client.generic("POST", EXPLORER, body, content_type=MULTIPART_CONTENT, **{"wsgi.input": stream})
    assert response.status_code == 413
    assert "The upload is 9.0 MB; the limit is 8 MB." in response.content.decode()
    assert stream.bytes_read == 0
    assert searched_images == []


def test_explorer_stops_reading_a_body_that_understates_its_length(
    settings: Any,
    searched_images: list[tuple[int, int]],
) -> None:
    # Under ASGI the body is not cut at the declared length (a chunked request declares none
    # that counts); the upload handler counts the bytes itself.
    settings.ALLOWED_HOSTS = ["testserver"]
    body = multipart(b"\0" * (24 * 1024 * 1024), query="watch")
    stream = CountingStream(body)
    request = ASGIRequest(
        {
            "type": "http",
            "method": "POST",
            "path": EXPLORER,
            "query_string": b"",
            "headers": [
                (b"host", b"testserver"),
                (b"content-type", MULTIPART_CONTENT.encode()),
                (b"content-length", b"1000"),
            ],
        },
        stream,
    )
    request.user = staff("merch", "view_similarity")
    request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
    match = resolve(EXPLORER)
    request.resolver_match = match
    response = match.func(request)
    assert isinstance(response, HttpResponse)
    response.render()  # type: ignore[attr-defined]
    assert response.status_code == 413
    assert "The photo is too large: the limit is 8 MB." in response.content.decode()
    assert MAX_UPLOAD_BYTES < stream.bytes_read < MAX_UPLOAD_BYTES + 512 * 1024 < len(body)
    assert searched_images == []  # not even the words were searched


def test_explorer_installs_the_upload_limit_before_the_csrf_check_reads_the_body(settings: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff("merch", "view_similarity"))
    token = client.get(EXPLORER).cookies[settings.CSRF_COOKIE_NAME].value
    photo = SimpleUploadedFile("big.jpg", b"\0" * (MAX_UPLOAD_BYTES + 1), content_type="image/jpeg")
    assert client.post(EXPLORER, {"photo": photo}).status_code == 403  # still CSRF-protected
    photo.seek(0)
    response = client.post(EXPLORER, {"csrfmiddlewaretoken": token, "photo": photo})
    assert response.status_code == 413  # the limiter saw it: it was in place before the check
    assert "The photo is too large: the limit is 8 MB." in response.content.decode()
    assert client.post(EXPLORER, {"csrfmiddlewaretoken": token, "query": "mug"}).status_code == 200


def test_explorer_types_a_photo_by_its_content_not_its_name(
    merchandiser: Client,
    searched_images: list[tuple[int, int]],
) -> None:
    picture = factories.product("Brown bag", image=factories.png_bytes((140, 80, 40)))
    services.index_products([picture.pk])
    png_named_txt = SimpleUploadedFile("photo.txt", factories.png_bytes((140, 80, 40)), content_type="text/plain")
    html = merchandiser.post(EXPLORER, {"photo": png_named_txt}).content.decode()
    assert "by photo" in html and f'data-pk="{picture.pk}"' in html
    assert searched_images == [(64, 64)]

    text_named_jpg = SimpleUploadedFile("photo.jpg", b"just some words", content_type="image/jpeg")
    html = merchandiser.post(EXPLORER, {"photo": text_named_jpg}).content.decode()
    assert "“photo.jpg” is not a photo. Upload a JPEG, PNG, WebP, GIF, BMP or TIFF file." in html
    assert "data-explorer-results" not in html

    ppm = io.BytesIO()
    Image.new("RGB", (8, 8)).save(ppm, format="PPM")  # an image Pillow reads, but not one we take
    ppm_named_png = SimpleUploadedFile("photo.png", ppm.getvalue(), content_type="image/png")
    html = merchandiser.post(EXPLORER, {"photo": ppm_named_png}).content.decode()
    assert "“photo.png” is not a photo" in html and "data-explorer-results" not in html
    assert len(searched_images) == 1


@pytest.fixture
def web_limit_1mp(settings: Any) -> Iterator[None]:
    settings.SIMILARITY = {**settings.SIMILARITY, "WEB_MAX_IMAGE_PIXELS": 1_000_000}
    yield
    assert get_settings().max_image_pixels == 90_000_000  # the workers' limit is its own


def test_explorer_refuses_a_photo_above_the_web_pixel_limit(
    merchandiser: Client,
    web_limit_1mp: None,
    searched_images: list[tuple[int, int]],
) -> None:
    assert get_settings().web_max_image_pixels == 1_000_000
    big = SimpleUploadedFile("poster.png", factories.png_bytes(size=(2000, 2000)), content_type="image/png")
    response = merchandiser.post(EXPLORER, {"photo": big})
    html = response.content.decode()
    assert response.status_code == 200 and "data-explorer-results" not in html
    assert re.search(
        r"“poster.png” is 2000×2000 pixels \(4.0 megapixels\); the explorer reads photos of "
        r"at most 1 megapixels",
        html,
    )
    assert searched_images == []


def test_explorer_reads_a_large_jpeg_at_reduced_scale(
    merchandiser: Client,
    web_limit_1mp: None,
    searched_images: list[tuple[int, int]],
) -> None:
    bag = factories.product("Brown bag", image=jpeg_bytes((300, 300)))
    services.index_products([bag.pk])
    # 12 megapixels stored, over the 1 MP limit; read at 1/4 scale (1000×750) it is under.
    photo = SimpleUploadedFile("camera.jpg", jpeg_bytes((4000, 3000)), content_type="image/jpeg")
    html = merchandiser.post(EXPLORER, {"photo": photo}).content.decode()
    assert "by photo" in html and f'data-pk="{bag.pk}"' in html
    assert searched_images == [(512, 384)]  # the small decoded copy, not the 12 MP original


def test_open_image_draft_caps_the_decoded_pixels_and_defaults_to_the_stored_size() -> None:
    camera = jpeg_bytes((4000, 3000))
    with pytest.raises(EncodingError, match="4000×3000"):  # default: the stored size counts
        open_image(io.BytesIO(camera), name="camera.jpg", max_pixels=1_000_000)
    decoded = open_image(io.BytesIO(camera), name="camera.jpg", max_pixels=1_000_000, draft=512)
    assert decoded.size == (512, 384)
    png = factories.png_bytes(size=(2000, 2000))  # no reduced-scale decoding: the stored size counts
    with pytest.raises(EncodingError, match="2000×2000"):
        open_image(io.BytesIO(png), name="poster.png", max_pixels=1_000_000, draft=512)


def test_upload_limit_handler_stops_at_the_limit() -> None:
    handler = admin_views.UploadLimitHandler(HttpRequest(), limit=100)
    assert handler.receive_data_chunk(b"x" * 60, 0) == b"x" * 60  # passed on to Django's handlers
    with pytest.raises(StopUpload) as stopped:
        handler.receive_data_chunk(b"x" * 60, 60)
    assert stopped.value.connection_reset  # the rest of the body is left unread
    assert handler.exceeded and handler.received == 120
