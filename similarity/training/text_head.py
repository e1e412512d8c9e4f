"""A text head learned from the catalog's own texts alone (``similarity_train --text``).

For shops without usable images there are no image–text pairs; the positives come from the
texts themselves instead, on the cached frozen vectors. Each object has several *views*, the
texts that describe it in different words (the indexed text, the title, the head of the
description: :meth:`~similarity.specs.IndexSpec.get_text_views`), and dropout on the frozen
vector makes two draws of one view differ (SimCSE's augmentation). A symmetric InfoNCE loss pulls
a positive pair together and pushes the other objects of the batch away. No labels.

The positive of an object is a view of the object itself *or of one of its 10 nearest objects*
in the frozen space (``positives="neighbours"``, the default). Pairing only an object's own
views (``positives="views"``, plain instance discrimination) pushes the near products of the
same kind apart as negatives: on flipkart-1050 it lowered text p@10 from 0.770 to 0.707, where
neighbour positives raised it to 0.779, on both halves of the categories (docs/training.md).

The head is residual and starts as the identity (``x + x·D + b``, ``D = 0``); weight decay pulls
``D`` back towards 0, so the head moves away from the pretrained model only as far as the
catalog's views ask. It is one linear map, applied at encode time to the indexed texts *and* to
the words shoppers type, so text-to-text search stays in one space.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .heads import Heads

logger = logging.getLogger(__name__)


@dataclass
class TextTrainConfig:
    """Fixed defaults, chosen before measuring and not tuned on any labels (docs/training.md):
    SimCSE's temperature and dropout, a short schedule, a decay that keeps the head near the
    identity."""

    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    #: AdamW's decoupled decay on ``D``: a pull back to the pretrained model
    weight_decay: float = 0.01
    #: dropout on the frozen vectors: the augmentation that makes two draws of a view differ
    dropout: float = 0.1
    temperature: float = 0.05
    seed: int = 0
    #: ``views``: the positive is another view of the same object (instance discrimination);
    #: ``neighbours``: a view of the object or of one of its ``neighbours`` nearest objects in
    #: the frozen space (the size of a "similar products" row), so that near products are not
    #: pushed apart as negatives
    positives: str = "neighbours"
    neighbours: int = 10


def train_text_head(views: np.ndarray, owner: np.ndarray, config: TextTrainConfig | None = None) -> Heads:
    """Learn a text head from ``views`` (rows of frozen text vectors) where ``owner[r]`` is the
    object row r describes; two views of one object are a positive pair."""
    import torch

    config = config or TextTrainConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches of small rows: one thread, no contention
    try:
        return _train(np.asarray(views, np.float32), np.asarray(owner), config)
    finally:
        torch.set_num_threads(threads)


def _view_table(owner: np.ndarray) -> list[np.ndarray]:
    """For each object (in order of first appearance), the rows of its views."""
    _objects, inverse = np.unique(owner, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def _train(views: np.ndarray, owner: np.ndarray, config: TextTrainConfig) -> Heads:
    import torch
    from torch import nn

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    table = _view_table(owner)
    near = _nearest(views, table, config.neighbours) if config.positives == "neighbours" else None
    x = torch.as_tensor(views)
    dim = x.shape[1]
    delta = nn.Parameter(torch.zeros(dim, dim))
    bias = nn.Parameter(torch.zeros(dim))
    drop = nn.Dropout(config.dropout)
    optimiser = torch.optim.AdamW([delta, bias], lr=config.lr, weight_decay=config.weight_decay)
    n = len(table)
    steps_per_epoch = max(1, int(np.ceil(n / config.batch_size)))
    total = max(2, config.epochs * steps_per_epoch)  # epochs=0: the identity, untrained
    # 10% warm-up, but at least 1.5 steps: torch's one-cycle divides by (warm-up steps − 1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.lr, total_steps=total, pct_start=min(0.9, max(0.1, 1.5 / total))
    )

    def head(rows: Any) -> Any:
        v = drop(x[rows])
        return nn.functional.normalize(v + v @ delta + bias, dim=1)

    loss_value = float("nan")
    for _epoch in range(config.epochs):
        order = rng.permutation(n)
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            if len(batch) < 2:
                continue
            first, second = _two_views(table, batch, rng, near)
            z1, z2 = head(torch.as_tensor(first)), head(torch.as_tensor(second))
            logits = z1 @ z2.T / config.temperature
            target = torch.arange(len(batch))
            loss = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            loss_value = float(loss.detach())
    seconds = time.perf_counter() - started
    weight = (torch.eye(dim) + delta.detach()).numpy().copy()
    drift = float(np.linalg.norm(delta.detach().numpy()) / np.sqrt(dim))
    logger.info("trained a text head on %d objects (%d views) in %.1f s (last loss %.3f, drift %.3f)",
                n, len(views), seconds, loss_value, drift)
    return Heads(
        weights={"text": weight}, bias={"text": bias.detach().numpy().copy()},
        meta={"objects": n, "views": int(len(views)), "seconds": round(seconds, 2), "loss": round(loss_value, 4),
              "drift": round(drift, 4)},
    )


def _nearest(views: np.ndarray, table: list[np.ndarray], k: int) -> np.ndarray:
    """Each object's ``k`` nearest objects by its first view (the indexed text), itself first."""
    first = views[[rows[0] for rows in table]]
    sim = first @ first.T
    np.fill_diagonal(sim, np.inf)
    k = min(k + 1, len(first))
    return np.argsort(-sim, axis=1)[:, :k]


def _two_views(
    table: list[np.ndarray], batch: np.ndarray, rng: np.random.Generator, near: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Two different views of each object (the same one twice when it has one: dropout differs);
    with ``near``, the second is a view of the object or of one of its nearest objects."""
    first, second = np.empty(len(batch), np.int64), np.empty(len(batch), np.int64)
    for i, obj in enumerate(batch):
        rows = table[obj]
        other = table[int(rng.choice(near[obj]))] if near is not None else rows
        if other is rows:
            if len(rows) == 1:
                first[i] = second[i] = rows[0]
            else:
                a, b = rng.choice(len(rows), size=2, replace=False)
                first[i], second[i] = rows[a], rows[b]
        else:
            first[i], second[i] = rng.choice(rows), rng.choice(other)
    return first, second
