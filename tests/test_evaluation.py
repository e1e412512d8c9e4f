"""similarity_evaluate: exact metric values on hand-made rankings, and a real run on flipkart items."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command

from similarity import evaluation, services

from . import factories


def _catalog(image: list[list[float]], text: list[list[float]], labels: list[str]) -> evaluation.EvalCatalog:
    n = len(labels)
    return evaluation.EvalCatalog(
        pks=list(range(1, n + 1)), skus=[f"S{i}" for i in range(n)], titles=[f"t{i}" for i in range(n)],
        texts=[f"product {label} number {i}" for i, label in enumerate(labels)],
        categories=[["Top", label] for label in labels], groups=np.arange(n),
        vectors={"image": evaluation_unit(image), "text": evaluation_unit(text)},
        present={"image": np.ones(n, dtype=bool), "text": np.ones(n, dtype=bool)},
    )


def evaluation_unit(rows: list[list[float]]) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


# -- metrics on hand-made rankings ----------------------------------------------------------
def test_binary_metrics_exact():
    m = evaluation.query_metrics([1, 0, 1, 0, 0], [1, 1, 1], ks=(1, 5))
    assert m["precision@1"] == 1.0
    assert m["precision@5"] == pytest.approx(0.4)
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@5"] == pytest.approx(2 / 3)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert m["mrr"] == 1.0
    assert m["hit_rate@1"] == 1.0


def test_first_relevant_at_three():
    m = evaluation.query_metrics([0, 0, 1], [1], ks=(1, 3))
    assert m == pytest.approx({
        "precision@1": 0.0, "recall@1": 0.0, "ndcg@1": 0.0, "precision@3": 1 / 3, "recall@3": 1.0,
        "ndcg@3": 0.5, "mrr": 1 / 3, "hit_rate@1": 0.0,
    })


def test_graded_ndcg_and_mrr_beyond_the_cut_off():
    m = evaluation.query_metrics([2, 0, 3], [3, 2], ks=(3,))
    assert m["ndcg@3"] == pytest.approx((2 + 3 / 2) / (3 + 2 / math.log2(3)))
    assert m["precision@3"] == pytest.approx(2 / 3)
    far = evaluation.query_metrics([0, 0], [1], ks=(2,), first_relevant_rank=4)
    assert far["mrr"] == 0.25
    assert far["precision@2"] == 0.0


def test_fuse_scores_weighted_mean_and_missing_modality():
    cosines = {"image": np.array([0.9, np.nan, 0.1]), "text": np.array([0.5, 0.8, np.nan])}
    fused = services.fuse_scores(cosines, {"image": 0.25, "text": 0.75}, normalisation="none")
    assert fused == pytest.approx([0.25 * 0.9 + 0.75 * 0.5, 0.8, 0.1])
    z = services.fuse_scores({"text": np.array([1.0, 2.0, 3.0])}, {"text": 1.0}, normalisation="zscore")
    assert z == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
    assert np.isneginf(services.fuse_scores({"image": np.array([np.nan])}, {"image": 1.0}))[0]


def test_evaluate_on_a_tiny_catalog():
    # a0,a1 share label "a"; b0,b1 label "b". Image vectors put a0 next to b0 (a wrong neighbour);
    # text vectors are right for everyone.
    image = [[1, 0.1, 0], [0, 0, 1], [1, 0, 0.05], [0, 1, 0]]
    text = [[1, 0.1, 0], [1, 0, 0.1], [0, 1, 0], [0.1, 1, 0]]
    catalog = _catalog(image, text, ["a", "a", "b", "b"])
    relevance = evaluation.category_relevance(catalog, 2)
    result = evaluation.evaluate(catalog, relevance, rankings=("image", "text"), ks=(1, 3), curve_depth=3)
    assert result.metrics["text"]["precision@1"] == 1.0
    assert result.metrics["text"]["mrr"] == 1.0
    assert result.metrics["text"]["recall@3"] == 1.0
    # image: a0 → b0 first, b0 → a0 first; a1 and b1 get their label mate... check by hand:
    top = result.top["image"][:, 0].tolist()
    expected_hits = [1.0 if catalog.categories[q] == catalog.categories[t] else 0.0
                     for q, t in zip(result.queries.tolist(), top, strict=True)]
    assert result.metrics["image"]["precision@1"] == pytest.approx(np.mean(expected_hits))
    assert result.metrics["image"]["precision@1"] < 1.0
    assert result.metrics["text"]["queries"] == 4


def test_labels_file_and_sample_are_reproducible(tmp_path: Path):
    catalog = _catalog([[1, 0]] * 6, [[1, 0], [1, 0.1], [0, 1], [0.1, 1], [1, 1], [1, 0.9]], ["x"] * 6)
    labels = tmp_path / "labels.csv"
    labels.write_text("sku,label\nS0,red\nS1,red\nS2,blue\nS3,blue\nS4,\n")
    relevance = evaluation.labels_relevance(catalog, labels)
    assert relevance.query_candidates(len(catalog)).tolist() == [0, 1, 2, 3]
    first = evaluation.sample_queries(np.arange(100), 10, seed=3)
    assert first.tolist() == evaluation.sample_queries(np.arange(100), 10, seed=3).tolist()
    assert len(set(first.tolist())) == 10


# -- a real run: flipkart products imported, indexed by the real encoders ------------------
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_command_on_flipkart_items(flipkart: Path, flipkart_rows: list[dict[str, Any]], tmp_path: Path,
                                   capsys: Any):
    from catalog.importer import import_catalog
    from catalog.models import Product

    subset = factories.catalog_subset(flipkart, flipkart_rows, tmp_path, {
        "Watches > Wrist Watches": 3, "Home Furnishing > Curtains & Accessories": 3})
    import_catalog(subset, image_roots=[flipkart])  # indexed after each commit
    assert Product.objects.count() == 6
    out = tmp_path / "eval.json"
    call_command("similarity_evaluate", "--level", "2", "--k", "1,3", "--json", str(out),
                 "--plots", str(tmp_path / "plots"), "--sweep-weights", "--sweep-steps", "2",
                 "--write-settings", str(tmp_path / "weights.json"))
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"image", "text", "fused", "lexical"}
    for values in metrics.values():
        assert {"precision@1", "precision@3", "recall@3", "ndcg@3", "mrr", "hit_rate@1"} <= set(values)
        assert values["queries"] == 6
    # watches and curtains are easy: every ranking puts a same-category product first
    assert metrics["fused"]["precision@1"] == 1.0
    assert metrics["image"]["precision@1"] == 1.0
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {
        "precision_at_k.png", "embedding_map.png", "examples.png", "weight_sweep.png"}
    assert set(json.loads((tmp_path / "weights.json").read_text())["WEIGHTS"]) == {"image", "text"}
    printed = capsys.readouterr().out
    assert "Best weights" in printed and "lexical" in printed

    # `fused` is what find_similar shows: same order for every product
    catalog = evaluation.load_catalog()
    ranker = evaluation.Ranker(catalog, limit=5)
    queries = np.arange(len(catalog))
    top = evaluation.top_k(ranker.scores("fused", queries), 5)
    for q in queries:
        shown = [hit.pk for hit in services.find_similar(catalog.objects[q], limit=5).hits]
        assert shown == [catalog.pks[c] for c in top[q] if c >= 0]
