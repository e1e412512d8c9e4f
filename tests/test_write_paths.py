"""Every write path reaches the index: QuerySet.update, bulk_create, bulk_update, deletes of
related rows (SET_NULL), many-to-many changes from either side, and raw SQL via mark_changed.
Each test ends with the index equal to the database."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction

from catalog.models import Category, Product, ProductImage
from similarity import registry, services
from similarity.changes import mark_changed
from similarity.specs import text_hash as text_hash_of
from tests import factories
from tests.testapp.models import BlogPost, Tag

pytestmark = pytest.mark.django_db(transaction=True)


def payload(obj: Any) -> dict[str, Any]:
    spec = registry.get_spec(type(obj))
    point = registry.vector_index(spec).retrieve([spec.point_id(obj.pk)]).get(spec.point_id(obj.pk))
    assert point is not None, f"{obj} has no point"
    return point.payload


def test_queryset_update_is_captured_and_indexed() -> None:
    shoes = [factories.product(f"Shoe {n}", in_stock=True) for n in range(3)]
    other = factories.product("Hat", in_stock=True)
    assert payload(shoes[0])["in_stock"] is True
    with transaction.atomic():
        Product.objects.filter(title__startswith="Shoe").update(in_stock=False)  # the typical stock sync
    assert [payload(p)["in_stock"] for p in shoes] == [False, False, False]
    assert payload(other)["in_stock"] is True
    Product.objects.filter(pk=shoes[0].pk).update(title="Running shoe, renamed")
    text_hash = payload(shoes[0])["text_hash"]
    assert text_hash == text_hash_of(registry.get_spec(Product).get_text(Product.objects.get(pk=shoes[0].pk)))


def test_bulk_create_and_bulk_update_are_indexed(dispatched: Any, settings: Any) -> None:
    made = Product.objects.bulk_create([Product(sku=f"B{n}", title=f"Bulk lamp {n}") for n in range(4)])
    assert dispatched == [("catalog.product", sorted(p.pk for p in made), [])]
    dispatched.clear()
    for p in made:
        p.title = p.title.replace("lamp", "chair")
    Product.objects.bulk_update(made, ["title"])
    assert dispatched == [("catalog.product", sorted(p.pk for p in made), [])]
    services.process_pending()
    assert all(payload(p)["sku"] == p.sku for p in made)
    assert services.index_health()["pending_changes"] == 0


def test_deleting_a_category_reindexes_its_products_whose_category_became_null() -> None:
    shoe = factories.product("Shoe", category_path="Fashion > Footwear > Shoes")
    hat = factories.product("Hat", category_path="Fashion > Hats")
    footwear = Category.objects.get(name="Footwear")
    assert footwear.pk in payload(shoe)["category_ids"]
    footwear.delete()  # cascades to "Shoes"; the product's category is SET_NULL without a signal of its own
    shoe.refresh_from_db()
    assert shoe.category_id is None
    assert payload(shoe)["category_ids"] == []
    assert payload(hat)["category_ids"] != []


def test_category_queryset_update_reaches_the_products_below() -> None:
    shoe = factories.product("Shoe", category_path="Fashion > Footwear > Shoes", image=factories.png_bytes())
    kitchen = factories.category("Kitchen")
    Category.objects.filter(name="Footwear").update(parent=kitchen)
    shoe.refresh_from_db()
    assert payload(shoe)["category_ids"][0] == kitchen.pk
    ProductImage.objects.filter(product=shoe).delete()
    assert "image" not in registry.vector_index().retrieve(
        [registry.get_spec().point_id(shoe.pk)], with_vectors=True)[registry.get_spec().point_id(shoe.pk)].vectors


def test_raw_sql_then_mark_changed() -> None:
    lamp = factories.product("Desk lamp", price="10.00")
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Product._meta.db_table} SET price = 25 WHERE id = %s", [lamp.pk])
    assert payload(lamp)["price"] == 10.0, "raw SQL is invisible until someone says so"
    assert mark_changed(Product.objects.filter(pk=lamp.pk)) == 1
    assert payload(lamp)["price"] == 25.0
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {Product._meta.db_table} WHERE id = %s", [lamp.pk])
    assert mark_changed([lamp.pk], model=Product) == 1
    spec = registry.get_spec()
    assert registry.vector_index().retrieve([spec.point_id(lamp.pk)]) == {}


def test_many_to_many_changes_from_either_side(settings: Any) -> None:
    settings.SIMILARITY = {**settings.SIMILARITY, "SPECS": ["tests.testapp.specs.BlogPostSpec"]}
    post = BlogPost.objects.create(headline="Watch straps explained")
    steel, leather = Tag.objects.create(name="steel"), Tag.objects.create(name="leather")
    assert payload(post)["tags"] == []
    post.tags.add(steel, leather)
    assert payload(post)["tags"] == ["leather", "steel"]
    post.tags.remove(leather)
    assert payload(post)["tags"] == ["steel"]
    leather.posts.add(post)  # the reverse side
    assert payload(post)["tags"] == ["leather", "steel"]
    steel.posts.clear()
    assert payload(post)["tags"] == ["leather"]
    post.tags.clear()
    assert payload(post)["tags"] == []


def test_an_image_moved_to_another_product_reindexes_both() -> None:
    a = factories.product("Lamp", image=factories.png_bytes((200, 0, 0)))
    b = factories.product("Chair")
    spec, index = registry.get_spec(), registry.vector_index()

    def has_image(p: Product) -> bool:
        return "image" in index.retrieve([spec.point_id(p.pk)], with_vectors=True)[spec.point_id(p.pk)].vectors

    assert has_image(a) and not has_image(b)
    picture = a.images.get()
    picture.product = b
    picture.save()  # the old product is queued too (pre_save), not only the new one
    assert not has_image(a) and has_image(b)
    ProductImage.objects.filter(pk=picture.pk).update(product=a)  # and through QuerySet.update
    assert has_image(a) and not has_image(b)


def test_deleted_and_created_again_under_the_same_key_in_one_transaction_is_indexed(settings: Any) -> None:
    from tests.testapp.models import Recipe

    settings.SIMILARITY = {**settings.SIMILARITY, "SPECS": ["tests.testapp.specs.RecipeSpec"]}
    Recipe.objects.create(code="pad-thai", name="Pad thai", cuisine="thai")
    with transaction.atomic():
        Recipe.objects.filter(code="pad-thai").delete()
        Recipe.objects.create(code="pad-thai", name="Pad thai with tofu", cuisine="thai")
    assert payload(Recipe.objects.get(code="pad-thai"))["pk"] == "pad-thai"
    assert services.index_health("testapp.recipe")["pending_changes"] == 0
