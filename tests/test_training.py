"""Adapters learned from the catalog: heads, label-free weights, training, activation, rollback."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command

from similarity import registry, services
from similarity.evaluation.catalog import load_catalog
from similarity.feedback import feedback_matrix, feedback_vector
from similarity.fusion import weights_for
from similarity.models import AdapterArtifact, IndexState
from similarity.search import _image_side
from similarity.training.heads import Heads, TrainConfig, train_heads
from similarity.training.reliability import modality_weights

from . import factories


def _unit(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def _clusters(n: int, dim: int, groups: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % groups
    centres = rng.normal(size=(groups, dim))
    return _unit(centres[labels] + noise * rng.normal(size=(n, dim))), labels


# -- the pieces, on made-up vectors ----------------------------------------------------------
def test_reliability_prefers_the_modality_whose_neighbours_the_other_confirms():
    text, _labels = _clusters(300, 32, 10, 0.5, seed=1)
    noise = _unit(np.random.default_rng(2).normal(size=(300, 48)))
    weights = modality_weights({"image": noise, "text": text})
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    assert weights["text"] > 0.8 > weights["image"]
    image, _ = _clusters(300, 48, 10, 0.5, seed=1)  # the same groups seen by both: equal trust
    balanced = modality_weights({"image": image, "text": text})
    assert abs(balanced["image"] - balanced["text"]) < 0.2


def test_heads_align_paired_vectors_and_round_trip():
    image, labels = _clusters(200, 40, 8, 0.6, seed=3)
    rotation = np.linalg.qr(np.random.default_rng(4).normal(size=(40, 24)))[0]
    text = _unit(image @ rotation + 0.05 * np.random.default_rng(5).normal(size=(200, 24)))
    heads = train_heads(image, text, TrainConfig(dim=16, epochs=40, batch_size=64, text_identity=False,
                                                 temperature=0.05))
    zi, zt = heads.apply("image", image), heads.apply("text", text)
    assert zi.shape == (200, 16) and np.allclose(np.linalg.norm(zi, axis=1), 1, atol=1e-5)
    cross = zi @ zt.T  # each image is closer to its own text than to the others, far above chance
    assert np.diag(cross).mean() > cross.mean() + 0.2
    assert (np.argmax(cross, axis=1) == np.arange(200)).mean() > 10 / 200
    assert (labels[np.argmax(cross, axis=1)] == labels).mean() > 0.9
    again = Heads.from_bytes(heads.to_bytes())
    assert np.allclose(again.apply("text", text), zt, atol=1e-6)


def test_weights_for_without_an_adapter(settings: Any):
    assert weights_for() == {"image": 0.5, "text": 0.5}  # no number tuned to any catalog
    settings.SIMILARITY = {**settings.SIMILARITY, "WEIGHTS": {"image": 0.2, "text": 0.8}}
    assert weights_for() == {"image": 0.2, "text": 0.8}  # an explicit setting wins


# -- a real run: flipkart products, real encoders, real Qdrant Edge --------------------------
#: five categories that look nothing alike
CATEGORIES = ("Watches > Wrist Watches", "Home Furnishing > Curtains & Accessories", "Kitchen & Dining > Coffee Mugs",
              "Baby Care > Infant Wear", "Computers > Laptop Accessories")


def _subset(flipkart: Path, rows: list[dict[str, str]], tmp_path: Path, per_category: int = 6) -> Path:
    return factories.catalog_subset(flipkart, rows, tmp_path, dict.fromkeys(CATEGORIES, per_category))


def _versions() -> set[str]:
    return set(IndexState.objects.exclude(model_version="").values_list("model_version", flat=True))


def _similar(products: list[Any]) -> dict[int, list[int]]:
    return {p.pk: [h.pk for h in services.find_similar(p, limit=5).hits] for p in products}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_train_activate_search_and_roll_back(flipkart: Path, flipkart_rows: list[dict[str, Any]], tmp_path: Path,
                                             capsys: Any):
    from catalog.importer import import_catalog
    from catalog.models import Product

    import_catalog(_subset(flipkart, flipkart_rows, tmp_path), image_roots=[flipkart])  # indexed after commit
    products = list(Product.objects.order_by("pk"))
    assert len(products) == 30
    plain_versions = _versions()
    assert not any("+ad-" in v for v in plain_versions)
    plain = _similar(products)

    # train and make live: every vector re-encoded through a rebuild, the artifact in the version
    call_command("similarity_train", "--epochs", "30")
    first = AdapterArtifact.objects.get(active=True)
    assert "live now: " + first.version in capsys.readouterr().out
    assert first.meta["pairs"] == 30 and first.previous is None
    assert set(first.meta["fusion_weights"]) == {"image", "text"}
    assert _versions() == {f"{v}+{first.version}" for v in plain_versions}
    assert registry.text_encoder().version.endswith("+" + first.version)
    assert registry.vector_dims() == {"image": 384, "text": 384}  # photos mapped into the text space
    assert weights_for() == first.meta["fusion_weights"]
    assert services.reconcile().total == 0  # reconcile sees the adapter's version everywhere
    adapted = _similar(products)
    assert all(len(hits) == 5 for hits in adapted.values())

    # typed words now reach the image vectors too (joint space), fused with the text match
    hits = services.search_text("wrist watch", limit=5).hits
    assert len(hits) == 5 and all("image" in h.scores and "text" in h.scores for h in hits)
    assert sum("Watch" in h.object.title for h in hits) >= 3
    # ... the image side moved towards the photos of the three best text matches (feedback)
    spec, index = registry.get_spec(), registry.vector_index()
    words = registry.text_encoder().encode(["wrist watch"])[0]
    best_texts = index.query("text", words.tolist(), limit=3)
    stored = index.retrieve([h.id for h in best_texts] + [spec.point_id(h.pk) for h in hits], with_vectors=True)
    image_side = feedback_vector(words, np.array([stored[h.id].vectors["image"] for h in best_texts]))
    assert not np.allclose(image_side, words)
    for hit in hits:
        assert hit.scores["image"] == pytest.approx(float(image_side @ stored[spec.point_id(hit.pk)].vectors["image"]),
                                                    abs=1e-3)
    # ... the same vector the evaluation ranks photos by (one function, two callers)
    catalog = load_catalog()
    measured = feedback_matrix(words[None], catalog.vectors["text"], catalog.vectors["image"],
                               catalog.present["text"], catalog.present["image"])[0]
    assert np.allclose(_image_side(index, words.tolist(), None, weights_for()), measured, atol=1e-4)
    assert np.allclose(measured, image_side, atol=1e-4)

    # a photo: encoded into the joint space (whole + centre crop), matched against the image vectors
    photo = flipkart / next(r["image"] for r in flipkart_rows if r["sku"] == products[0].sku)
    assert services.search_image(str(photo), limit=3).hits[0].pk == products[0].pk

    # the evaluation: typed category names ranked by the image vectors alone, before/after in one run
    labels, queries = tmp_path / "labels.csv", tmp_path / "queries.csv"
    labels.write_text("sku,label\n" + "".join(
        f"{p.sku},{' > '.join(c.name for c in p.category.ancestors()[:2])}\n" for p in products))
    queries.write_text("text,label\nWrist Watches,Watches > Wrist Watches\nCoffee Mugs,Kitchen & Dining > Coffee Mugs\n"
                       "Curtains,Home Furnishing > Curtains & Accessories\n")
    out = tmp_path / "queries.json"
    call_command("similarity_evaluate", "--queries", str(queries), "--labels", str(labels), "--compare-untrained",
                 "--json", str(out))
    metrics = json.loads(out.read_text())
    assert {"image", "text", "fused", "lexical", "text (untrained)"} <= set(metrics)
    assert "image (untrained)" not in metrics  # the plain encoders cannot rank photos by words
    assert metrics["image"]["queries"] == 3 and metrics["image"]["precision@5"] >= 0.6
    # each half of the top-level categories as a catalog of its own, its own queries only
    call_command("similarity_evaluate", "--queries", str(queries), "--labels", str(labels), "--cross-split",
                 "--json", str(out))
    halves = json.loads(out.read_text())
    assert halves["image"] == metrics["image"]
    # A: Baby Care, Home Furnishing, Watches (watches, curtains); B: Computers, Kitchen & Dining (mugs)
    assert halves["image [half A]"]["queries"] == 2 and halves["image [half B]"]["queries"] == 1
    assert {"text [half A]", "fused [half B]", "lexical [half B]"} <= set(halves)
    call_command("similarity_evaluate", "--labels", str(labels), "--compare-untrained", "--cross-split",
                 "--json", str(out))
    metrics = json.loads(out.read_text())
    assert {"image", "fused", "image (untrained)", "fused (untrained)"} <= set(metrics)
    assert metrics["image"]["precision@5"] > metrics["image (untrained)"]["precision@5"]
    assert capsys.readouterr().out.count("chosen on") == 4

    # a second artifact trained but not made live; then made live; rollback returns to the first
    call_command("similarity_train", "--epochs", "30", "--seed", "1", "--no-activate")
    second = AdapterArtifact.objects.exclude(pk=first.pk).get()
    assert not second.active and AdapterArtifact.objects.get(active=True) == first
    call_command("similarity_train", "--activate", second.version)
    second.refresh_from_db()
    assert second.active and second.previous == first
    call_command("similarity_train", "--rollback")
    assert AdapterArtifact.objects.get(active=True) == first
    assert _versions() == {f"{v}+{first.version}" for v in plain_versions}
    assert _similar(products) == adapted

    # rolling back the first returns to the plain encoders, and to the results before training
    call_command("similarity_train", "--rollback")
    assert not AdapterArtifact.objects.filter(active=True).exists()
    assert _versions() == plain_versions
    assert _similar(products) == plain


# -- a text head from the catalog's texts alone (similarity_train --text) ---------------------
def test_text_head_starts_as_the_identity_and_pulls_views_of_one_object_together():
    from similarity.training.text_head import TextTrainConfig, train_text_head

    rng = np.random.default_rng(7)
    objects, _labels = _clusters(120, 32, 6, 0.4, seed=7)
    shared = rng.normal(size=(32,))  # boiler-plate every text of the catalog shares
    views = _unit(np.concatenate([objects + 0.8 * _unit(rng.normal(size=(120, 32))) + shared for _ in range(2)]))
    owner = np.concatenate([np.arange(120), np.arange(120)])
    untouched = train_text_head(views, owner, TextTrainConfig(epochs=0))
    assert np.allclose(untouched.apply("text", views), views, atol=1e-6)  # identity before training
    assert untouched.out_dim("text") == 32
    own = train_text_head(views, owner, TextTrainConfig(epochs=30, batch_size=64, positives="views"))
    assert set(own.weights) == {"text"} and own.meta["objects"] == 120 and own.meta["drift"] > 0

    def own_view_rank1(x: np.ndarray) -> float:  # how often an object's other view is its nearest text
        sim = x[:120] @ x[120:].T
        return float((np.argmax(sim, axis=1) == np.arange(120)).mean())

    assert own_view_rank1(own.apply("text", views)) > own_view_rank1(views)

    def same_group_at_5(x: np.ndarray) -> float:  # neighbours of the same made-up kind
        first = x[:120]
        sim = first @ first.T
        np.fill_diagonal(sim, -np.inf)
        return float((_labels[np.argsort(-sim, axis=1)[:, :5]] == _labels[:, None]).mean())

    near = train_text_head(views, owner, TextTrainConfig(epochs=30, batch_size=64))  # neighbour positives
    assert same_group_at_5(near.apply("text", views)) > same_group_at_5(views)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_text_only_catalog_trains_a_text_head_searches_through_it_and_rolls_back(
        flipkart: Path, flipkart_rows: list[dict[str, Any]], tmp_path: Path, capsys: Any):
    from catalog.importer import import_catalog
    from catalog.models import Product
    from similarity.search import joint_space

    subset = _subset(flipkart, flipkart_rows, tmp_path, per_category=4)
    with open(subset, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(subset, "w", newline="", encoding="utf-8") as fh:  # a shop without photos
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "image": ""} for row in rows)
    import_catalog(subset)
    products = list(Product.objects.order_by("pk"))
    assert len(products) == 20
    plain_versions = _versions()
    plain = _similar(products)
    query = "analog wrist watch for men"
    plain_search = [h.pk for h in services.search_text(query, limit=5).hits]

    call_command("similarity_train", "--text", "--epochs", "10")
    artifact = AdapterArtifact.objects.get(active=True)
    out = capsys.readouterr().out
    assert f"live now: {artifact.version}" in out and "texts of 20 objects" in out
    assert artifact.meta["kind"] == "text" and artifact.meta["objects"] == 20
    assert artifact.meta["views"] == 60  # the indexed text, the title and the description head
    assert _versions() == {f"{v}+{artifact.version}" for v in plain_versions}
    assert registry.text_encoder().version.endswith("+" + artifact.version)
    assert "+" not in registry.image_encoder().version  # photos keep the plain model
    assert registry.vector_dims()["text"] == 384 and not joint_space()

    # typed words go through the same head as the catalog's texts: text-to-text search works
    hits = services.search_text(query, limit=5).hits
    assert len(hits) == 5 and all(set(h.scores) == {"text"} for h in hits)
    assert sum("Watch" in h.object.title for h in hits) >= 3
    assert all(len(h) == 5 for h in _similar(products).values())

    call_command("similarity_train", "--rollback")
    assert not AdapterArtifact.objects.filter(active=True).exists()
    assert _versions() == plain_versions
    assert _similar(products) == plain
    assert [h.pk for h in services.search_text(query, limit=5).hits] == plain_search
