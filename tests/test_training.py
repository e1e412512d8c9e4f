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
from similarity.fusion import weights_for
from similarity.models import AdapterArtifact, IndexState
from similarity.training.heads import Heads, TrainConfig, train_heads
from similarity.training.reliability import modality_weights


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
def _subset(flipkart: Path, rows: list[dict[str, str]], tmp_path: Path, per_category: int = 6) -> Path:
    wanted = {"Watches > Wrist Watches": per_category, "Home Furnishing > Curtains & Accessories": per_category,
              "Kitchen & Dining > Coffee Mugs": per_category, "Baby Care > Infant Wear": per_category,
              "Computers > Laptop Accessories": per_category}
    chosen = []
    for row in rows:
        key = " > ".join(row["category"].split(" > ")[:2])
        if wanted.get(key, 0) > 0:
            wanted[key] -= 1
            chosen.append({**row, "image": str(flipkart / row["image"])})
    path = tmp_path / "subset.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return path


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
