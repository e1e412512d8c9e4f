"""Item–item models from a basket × item matrix, each reduced to the same artifact: for every
item, its ``K`` best neighbours and their scores.

- ``cosine``: co-occurrence normalised for popularity, ``C_ij / (sqrt(n_i n_j) + shrink)``;
- ``ease``: EASE (Steck 2019), the closed-form linear item–item model ``B = I - P / diag(P)``,
  ``P = (XᵀX + λI)⁻¹`` (dense: only up to ``EASE_MAX_ITEMS`` items);
- ``als``: implicit-feedback matrix factorisation (the ``implicit`` library's ALS), neighbours
  by the cosine of the item factors.

A basket is scored by summing its items' neighbour rows (:func:`score_rows`); recent views by
:func:`sequence_scores` (what followed them in visitors' sequences, plus the item–item term at the
weight of a :class:`Mix`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

#: EASE inverts a dense item × item matrix: beyond this many items it is left out
EASE_MAX_ITEMS = 15000
ALGORITHMS = ("cosine", "ease", "als")
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "cosine": {"shrink": 10.0},
    "ease": {"lambda": 50.0},
    "als": {"factors": 64, "regularization": 0.05, "alpha": 20.0, "iterations": 15},
}


def basket_matrix(baskets: list[list[int]], n_items: int) -> sp.csr_matrix:
    """Binary baskets × items."""
    rows = np.repeat(np.arange(len(baskets)), [len(b) for b in baskets])
    cols = np.fromiter((i for b in baskets for i in b), dtype=np.int64, count=int(sum(len(b) for b in baskets)))
    matrix = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(baskets), n_items))
    matrix.data[:] = 1.0  # duplicates summed by the constructor: binary again
    return matrix


def top_k(score_block: Callable[[np.ndarray], np.ndarray], n: int, k: int, chunk: int = 512,
          ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best columns (itself left out) of the scores ``score_block(rows)``,
    computed ``chunk`` rows at a time so that no ``n × n`` matrix is ever needed."""
    k = max(1, min(k, n - 1))
    idx = np.zeros((n, k), dtype=np.int32)
    val = np.zeros((n, k), dtype=np.float32)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        block = np.asarray(score_block(rows), dtype=np.float32)
        block[np.arange(len(rows)), rows] = -np.inf
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        part_val = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-part_val, axis=1)
        idx[rows] = np.take_along_axis(part, order, axis=1)
        val[rows] = np.take_along_axis(part_val, order, axis=1)
    val[~np.isfinite(val)] = 0.0
    return idx, val


def fit(algorithm: str, matrix: sp.csr_matrix, *, k: int, params: dict[str, Any] | None = None,
        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``algorithm`` on baskets × items and return its neighbour lists (indices, scores)."""
    params = {**DEFAULT_PARAMS[algorithm], **(params or {})}
    n = matrix.shape[1]
    gram = (matrix.T @ matrix).tocsr().astype(np.float64)
    counts = np.asarray(gram.diagonal()).ravel()
    if algorithm == "cosine":
        norm = np.sqrt(counts)

        def cosine_block(rows: np.ndarray) -> np.ndarray:
            block = gram[rows].toarray()
            return block / (norm[rows, None] * norm[None, :] + params["shrink"])

        return top_k(cosine_block, n, k)
    if algorithm == "ease":
        if n > EASE_MAX_ITEMS:
            raise ValueError(f"EASE needs a dense {n} × {n} inverse; at most {EASE_MAX_ITEMS} items")
        dense = gram.toarray()
        dense[np.diag_indices(n)] += params["lambda"]
        inverse = np.linalg.inv(dense)
        weights = -inverse / np.diag(inverse)
        return top_k(lambda rows: weights[rows], n, k)
    if algorithm == "als":
        factors = als_factors(matrix, params, seed)
        unit = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-9)
        return top_k(lambda rows: unit[rows] @ unit.T, n, k)
    raise ValueError(f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")


def als_factors(matrix: sp.csr_matrix, params: dict[str, Any], seed: int) -> np.ndarray:
    """Item factors of ``implicit``'s ALS on baskets × items (CPU, one BLAS thread as it asks)."""
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    model = AlternatingLeastSquares(
        factors=int(params["factors"]), regularization=float(params["regularization"]),
        alpha=float(params["alpha"]), iterations=int(params["iterations"]), random_state=seed,
        calculate_training_loss=False, use_gpu=False,
    )
    with threadpool_limits(1, "blas"):
        model.fit(matrix.astype(np.float32), show_progress=False)
    return np.asarray(model.item_factors, dtype=np.float32)


def neighbour_matrix(idx: np.ndarray, val: np.ndarray) -> sp.csr_matrix:
    """The neighbour lists as a sparse item × item matrix (row i = i's neighbours)."""
    n, k = idx.shape
    return sp.csr_matrix((val.ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))


def score_rows(neighbours: sp.csr_matrix, items: list[int], weights: list[float] | None = None) -> np.ndarray:
    """Scores of every item for a set of items: the (weighted) sum of their neighbour rows."""
    if not items:
        return np.zeros(neighbours.shape[1], dtype=np.float32)
    w = np.asarray(weights if weights is not None else [1.0] * len(items), dtype=np.float32)
    return np.asarray(neighbours[items].T @ w).ravel()


@dataclass(frozen=True)
class Mix:
    """How recent views are scored (:func:`sequence_scores`). The defaults are what artifacts
    without a validated mix get (those trained before it existed, or on too little data): the
    item–item term as heavy as the transitions, each view half as heavy as the next newer one."""

    #: weight of the item–item (bought together) term next to the transitions (1)
    cooccurrence: float = 1.0
    #: a view's weight relative to the next newer one (the newest weighs 1)
    recency: float = 0.5

    def weights(self, count: int) -> list[float]:
        """Weights of ``count`` views, oldest first."""
        return [self.recency ** (count - 1 - n) for n in range(count)]


def unit(scores: np.ndarray) -> np.ndarray:
    """``scores`` scaled to a maximum of 1 (unchanged when nothing is positive)."""
    top = float(scores.max()) if len(scores) else 0.0
    return scores / top if top > 0 else scores


def sequence_scores(neighbours: sp.csr_matrix, transitions: sp.csr_matrix | None, items: list[int],
                    weights: list[float], cooccurrence: float) -> np.ndarray:
    """Scores of every item as the next one after recent views ``items`` (oldest first, weighted):
    their transition rows (what visitors looked at next) plus ``cooccurrence`` times their
    item–item rows, each part scaled to a maximum of 1. Without transitions: the item–item rows."""
    if transitions is None:
        return unit(score_rows(neighbours, items, weights))
    scores = unit(score_rows(transitions, items, weights))
    if cooccurrence > 0:
        scores = scores + cooccurrence * unit(score_rows(neighbours, items, weights))
    return scores
