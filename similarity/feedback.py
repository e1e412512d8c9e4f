"""Cross-modal feedback for typed words in the joint space (text-to-image search).

A typed phrase such as "Coffee Mugs" lies near the *titles* of mugs in the text model's space,
but only roughly near their *photos*, which a trained head maps into that space from another
model. So before the phrase is matched against the image vectors it is moved halfway towards
the mean image vector of the :data:`FEEDBACK_K` products whose texts match it best: photos that
are known to show what the words say. No labels are needed (pseudo-relevance feedback).

Chosen on half A of flipkart-1050's top-level categories and reported on half B, then the
reverse (docs/evaluation.md, "Text-to-image: cross-modal feedback"). The evaluation
(:mod:`similarity.evaluation.joint`) and :func:`similarity.search.search_text` both call
:func:`feedback_vector`, so what is measured is what ships.
"""

from __future__ import annotations

import numpy as np

#: the products whose text matches best, whose photos pull the query
FEEDBACK_K = 3
#: the share of the query vector taken from those photos (0: no feedback)
FEEDBACK_WEIGHT = 0.5


def feedback_vector(query: np.ndarray, images: np.ndarray, *, weight: float = FEEDBACK_WEIGHT) -> np.ndarray:
    """``query`` (unit length) moved towards the mean of ``images`` (unit rows), unit length.

    With no image to learn from (the best-matching products have no photo), or image vectors of
    another dimension (not a joint space), the query is returned unchanged.
    """
    query = np.asarray(query, dtype=np.float32)
    images = np.asarray(images, dtype=np.float32)
    if weight <= 0 or not images.size or images.ndim != 2 or images.shape[1] != query.shape[-1]:
        return query  # nothing to learn from, or photos of another space (no joint adapter)
    mixed = (1.0 - weight) * query + weight * images.mean(axis=0)
    norm = float(np.linalg.norm(mixed))
    return query if norm == 0 else (mixed / norm).astype(np.float32)


def feedback_matrix(queries: np.ndarray, text: np.ndarray, image: np.ndarray, has_text: np.ndarray,
                    has_image: np.ndarray, *, k: int = FEEDBACK_K) -> np.ndarray:
    """:func:`feedback_vector` for each row of ``queries`` over a catalog held in matrices: the
    ``k`` best text matches, and the image vectors of those of them that have one (what
    :func:`similarity.search.search_text` asks the index for)."""
    out = np.asarray(queries, dtype=np.float32).copy()
    if k <= 0 or not has_text.any():
        return out
    cosines = out @ text.T
    cosines[:, ~has_text] = -np.inf
    take = min(k, int(has_text.sum()))
    nearest = np.argsort(-cosines, axis=1, kind="stable")[:, :take]
    for q, rows in enumerate(nearest):
        rows = rows[has_image[rows]]
        out[q] = feedback_vector(out[q], image[rows])
    return out
