"""Cross-modal feedback for typed words (similarity.feedback): the pieces, on made-up vectors."""

from __future__ import annotations

import numpy as np
import pytest

from similarity.feedback import FEEDBACK_K, feedback_matrix, feedback_vector


def _unit(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)).astype(np.float32)


def test_feedback_vector_moves_the_query_halfway_to_the_photos_mean():
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    photos = _unit(np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
    moved = feedback_vector(query, photos)
    expected = 0.5 * query + 0.5 * photos.mean(axis=0)
    assert np.allclose(moved, expected / np.linalg.norm(expected), atol=1e-6)
    assert np.linalg.norm(moved) == pytest.approx(1.0, abs=1e-6)
    assert moved @ photos.mean(axis=0) > query @ photos.mean(axis=0)  # nearer the photos than before


def test_feedback_vector_without_photos_or_weight_is_the_query():
    query = _unit(np.array([0.3, 0.4, 0.5]))
    assert np.array_equal(feedback_vector(query, np.zeros((0, 3))), query)
    assert np.array_equal(feedback_vector(query, np.zeros((0,))), query)  # an empty list from the index
    assert np.array_equal(feedback_vector(query, _unit(np.eye(3)), weight=0.0), query)


def test_feedback_matrix_uses_the_best_text_matches_photos_and_skips_products_without_one():
    rng = np.random.default_rng(0)
    text, image = _unit(rng.normal(size=(20, 8))), _unit(rng.normal(size=(20, 8)))
    has_text, has_image = np.ones(20, dtype=bool), np.ones(20, dtype=bool)
    has_text[5] = False  # never a text match
    has_image[[2, 7]] = False  # matched by text, but no photo to learn from
    queries = _unit(text[[2, 5, 11]] + 0.1 * rng.normal(size=(3, 8)))
    out = feedback_matrix(queries, text, image, has_text, has_image)
    for q, row in enumerate(out):
        cosines = np.where(has_text, text @ queries[q], -np.inf)
        best = np.argsort(-cosines, kind="stable")[:FEEDBACK_K]
        assert 5 not in best
        photos = image[[i for i in best if has_image[i]]]
        assert np.allclose(row, feedback_vector(queries[q], photos), atol=1e-6)
    assert not np.allclose(out, queries)
    # a catalog without text vectors: nothing to match, the queries unchanged
    assert np.array_equal(feedback_matrix(queries, text, image, np.zeros(20, dtype=bool), has_image), queries)
