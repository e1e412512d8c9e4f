"""Several specs at once, on models with integer, UUID and string primary keys: each has its own
collection, queries never mix models, and rebuilding one never touches another's points."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command

from catalog.models import Product
from similarity import registry, services
from similarity.exceptions import SimilarityConfigError
from similarity.models import IndexState, PendingChange, Status
from similarity.specs import UnknownFilter
from tests import factories
from tests.testapp.models import BlogPost, Recipe

pytestmark = pytest.mark.django_db

SPECS = ["catalog.specs.ProductSpec", "tests.testapp.specs.BlogPostSpec", "tests.testapp.specs.RecipeSpec"]


@pytest.fixture
def three_specs(settings: Any) -> None:
    settings.SIMILARITY = {**settings.SIMILARITY, "SPECS": SPECS}


@pytest.fixture
def catalog(three_specs: None, django_capture_on_commit_callbacks: Any) -> dict[str, Any]:
    # Saved through the normal path: signals, outbox, the default dispatcher (eager Celery).
    with django_capture_on_commit_callbacks(execute=True):
        products = [
            factories.product("Stainless steel wrist watch", description="analog dial, leather strap"),
            factories.product("Digital sports watch", description="wrist watch, water resistant"),
            factories.product("Cotton bath towel", description="soft and absorbent"),
        ]
        posts = [
            BlogPost.objects.create(headline="How to choose a wrist watch", body="steel or leather strap"),
            BlogPost.objects.create(headline="Caring for bath towels", body="wash cotton towels warm"),
            BlogPost.objects.create(headline="Watch straps explained", body="leather, steel, rubber",
                                    published=False),
        ]
        recipes = [
            Recipe.objects.create(code="pad-thai", name="Pad thai noodles", cuisine="thai"),
            Recipe.objects.create(code="green-curry", name="Thai green curry", cuisine="thai"),
            Recipe.objects.create(code="carbonara", name="Spaghetti carbonara", cuisine="italian"),
        ]
    return {"products": products, "posts": posts, "recipes": recipes}


@pytest.mark.slow
def test_each_spec_has_its_own_collection_and_results_never_mix(catalog: dict[str, Any]) -> None:
    indexes = {label: registry.vector_index(label) for label in registry.specs()}
    assert {index.collection for index in indexes.values()} == {
        "similarity_catalog_product", "similarity_testapp_blogpost", "similarity_testapp_recipe",
    }
    assert {label: index.count() for label, index in indexes.items()} == {
        "catalog.product": 3, "testapp.blogpost": 3, "testapp.recipe": 3,
    }
    watch, _sports, _towel = catalog["products"]
    hits = services.find_similar(watch, limit=10).hits
    assert hits and all(isinstance(hit.object, Product) for hit in hits)
    assert hits[0].object.title == "Digital sports watch"

    post = catalog["posts"][0]
    post_hits = services.find_similar(post, limit=10).hits
    assert post_hits and all(isinstance(hit.object, BlogPost) for hit in post_hits)
    assert post_hits[0].object.headline == "Watch straps explained"
    assert {hit.pk for hit in post_hits} == {catalog["posts"][1].pk, catalog["posts"][2].pk}

    recipe_hits = services.find_similar(catalog["recipes"][0], limit=10)
    assert [hit.pk for hit in recipe_hits][0] == "green-curry"
    assert all(isinstance(hit.object, Recipe) for hit in recipe_hits)


@pytest.mark.slow
def test_uuid_and_string_keys_in_state_outbox_filters_and_admin_queries(catalog: dict[str, Any]) -> None:
    post, _towels, draft = catalog["posts"]
    state = IndexState.objects.get(model_label="testapp.blogpost", object_id=post.pk.hex, modality="text")
    assert state.status == Status.INDEXED
    assert not PendingChange.objects.filter(processed_at__isnull=True).exists()
    # A spec's own filters; a filter it does not declare is a clear error.
    published = services.find_similar(post, limit=10, published=True)
    assert draft.pk not in {hit.pk for hit in published}
    with pytest.raises(UnknownFilter, match="testapp.blogpost has no filter in_stock"):
        services.find_similar(post, in_stock=True)
    thai = services.search_text("noodles", model="testapp.recipe", cuisine="thai", limit=5)
    assert {hit.pk for hit in thai} == {"pad-thai", "green-curry"}
    # The text keys go back to the model's key type inside SQL (pk__in=subquery), on any database.
    spec = registry.get_spec(BlogPost)
    indexed = BlogPost.objects.filter(
        pk__in=spec.pks_of(IndexState.objects.filter(model_label=spec.label, status=Status.INDEXED))
    )
    assert set(indexed) == set(catalog["posts"])
    assert services.index_health(BlogPost)["unindexed_objects"] == 0
    assert services.index_health("testapp.recipe")["counts"]["text"]["indexed"] == 3


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_rebuilding_one_spec_never_touches_another(three_specs: None, dispatched: Any) -> None:
    product = factories.product("Stainless steel wrist watch")
    posts = [BlogPost.objects.create(headline=f"Post {n} about watches") for n in range(4)]
    call_command("similarity_reindex", "--all", "--model", "testapp.blogpost", verbosity=0)
    call_command("similarity_reindex", "--all", "--model", "catalog.product", verbosity=0)
    post_index = registry.vector_index("testapp.blogpost")
    before = post_index.generation
    assert post_index.count() == 4
    product.title = "Steel wrist watch, renamed"
    product.save()
    call_command("similarity_reindex", "--all", "--model", "catalog.product", verbosity=0)
    assert post_index.generation == before, "the other spec's live generation is untouched"
    assert post_index.count() == 4
    assert services.find_similar(posts[0], limit=3).ok
    assert registry.vector_index("catalog.product").count() == 1
    # Deleting a UUID-keyed object removes its point through the outbox.
    gone = posts[1].pk
    posts[1].delete()
    services.process_pending(model=BlogPost)
    assert post_index.retrieve([registry.get_spec(BlogPost).point_id(gone)]) == {}
    assert post_index.count() == 3


def test_with_several_specs_the_model_must_be_named(three_specs: None) -> None:
    with pytest.raises(SimilarityConfigError, match="several models are indexed"):
        registry.get_spec()
