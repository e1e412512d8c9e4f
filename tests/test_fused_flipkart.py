"""find_similar's one-request fused query against an exact brute-force fused ranking, on the real
vectors of every flipkart-1050 product (the real encoders; a quarter of the products without
their image, so the missing-modality rule is exercised), in Qdrant Edge with its HNSW graphs
built and through the qdrant-client code path."""

from __future__ import annotations

import csv
import uuid

import numpy as np
import pytest

from similarity import registry
from similarity.conf import IndexSettings
from similarity.encoders.image_decoding import open_image
from similarity.fusion import fuse_scores
from similarity.index.base import FusedQuery, PointData, SearchFilter
from similarity.index.edge import QdrantEdgeIndex
from similarity.index.qdrant import QdrantServerIndex

from .conftest import FLIPKART

WEIGHTS = {"image": 0.3, "text": 0.7}


@pytest.fixture(scope="module")
def catalog() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(vectors per modality, has-image mask, category ids) of every flipkart-1050 product."""
    if not (FLIPKART / "catalog.csv").is_file():
        pytest.skip("../shared/datasets/flipkart-1050 is not present")
    with open(FLIPKART / "catalog.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["image"]]
    texts = [f"{r['title']}. {r['description'][:300]}" for r in rows]
    images = []
    for r in rows:
        with open(FLIPKART / r["image"], "rb") as fh:
            images.append(open_image(fh, name=r["image"], max_pixels=40_000_000, draft=256))
    text = np.concatenate([registry.text_encoder().encode(texts[i:i + 64]) for i in range(0, len(texts), 64)])
    image = np.concatenate([registry.image_encoder().encode(images[i:i + 16]) for i in range(0, len(images), 16)])
    has_image = np.arange(len(rows)) % 4 != 0
    categories = {c: n for n, c in enumerate(sorted({r["category"].split(">")[0].strip() for r in rows}))}
    category = np.array([categories[r["category"].split(">")[0].strip()] for r in rows])
    return {"image": image, "text": text}, has_image, category


def _points(vectors, has_image, category) -> list[PointData]:
    points = []
    for i in range(len(has_image)):
        named = {"text": vectors["text"][i].tolist()}
        if has_image[i]:
            named["image"] = vectors["image"][i].tolist()
        points.append(PointData(str(uuid.UUID(int=i + 1)), named,
                                {"pk": str(i), "group": str(i), "category_ids": [int(category[i])]}))
    return points


def _exact_top(vectors, has_image, q: int, allowed: np.ndarray, k: int = 10) -> list[int]:
    image = np.where(has_image, vectors["image"] @ vectors["image"][q], np.nan) if has_image[q] else None
    cosines = {"text": vectors["text"] @ vectors["text"][q], **({"image": image} if image is not None else {})}
    fused = fuse_scores(cosines, WEIGHTS)
    fused[~allowed] = -np.inf
    fused[q] = -np.inf
    return [int(i) for i in np.argsort(-fused)[:k] if np.isfinite(fused[i])]


@pytest.mark.parametrize("backend", ["edge-hnsw", "edge-hnsw-float16", "qdrant-client"])
def test_one_request_equals_exact_fusion_on_flipkart(catalog, backend, tmp_path):
    vectors, has_image, category = catalog
    dims = {name: v.shape[1] for name, v in vectors.items()}
    schema = {"pk": "keyword", "group": "keyword", "category_ids": "integer"}
    edge = backend.startswith("edge-hnsw")
    if edge:  # a small indexing threshold: every segment gets its HNSW graph;
        # hnsw_ef 512: with the default 128 the graph walk missed 15 of 1,200 top-10 entries in
        # one CI run (recall 0.9875; the build is multi-threaded, so runs differ); float16: the
        # fused vector stored in half precision (FUSED_DATATYPE), the hits rescored in float32
        index = QdrantEdgeIndex(path=str(tmp_path / "edge"), collection="flipkart",
                                tuning=IndexSettings(indexing_threshold_kb=100, optimize_after=0, hnsw_ef=512,
                                                     fused_datatype="float16" if "float16" in backend else "float32"))
    else:
        index = QdrantServerIndex(url=":memory:", collection="flipkart")
    index.ensure(dims, schema)
    index.upsert(_points(vectors, has_image, category))
    if edge:
        index.optimize()
        # graphs, not scans: image, text and the fused vector searched
        assert index.indexed_vectors() >= int(has_image.sum()) + 2 * len(has_image) - 200
    queries = np.random.default_rng(0).choice(len(has_image), 60 if edge else 8, replace=False)
    recall, score_errors = [], []
    for q in queries:
        for match in ({}, {"category_ids": int(category[q])}):
            allowed = np.ones(len(has_image), bool) if not match else category == category[q]
            query_vectors = {"text": vectors["text"][q].tolist()}
            if has_image[q]:
                query_vectors["image"] = vectors["image"][q].tolist()
            hits = index.query_fused(FusedQuery(
                vectors=query_vectors, weights=WEIGHTS, fetch=100, limit=10, group_by="group",
                filter=SearchFilter(match=match, exclude_ids=frozenset({str(uuid.UUID(int=int(q) + 1))})),
                payload_fields=("pk", "group"),
            ))
            found = [int(h.payload["pk"]) for h in hits]
            exact = _exact_top(vectors, has_image, int(q), allowed)
            recall.append(len(set(found) & set(exact)) / len(exact))
            for hit in hits:  # the per-modality scores the admin shows are exact cosines
                i = int(hit.payload["pk"])
                for m, score in hit.scores.items():
                    score_errors.append(abs(score - float(vectors[m][i] @ vectors[m][q])))
                assert ("image" in hit.scores) == bool(has_image[i] and has_image[q])
    index.close()
    assert float(np.mean(recall)) >= 0.99, f"recall@10 against exact fusion: {np.mean(recall):.4f}"
    assert max(score_errors) < 1e-4
