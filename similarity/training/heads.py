"""Light heads on frozen features, trained with a symmetric InfoNCE loss (CLIP's objective).

Each modality gets a linear projection into one joint space. The catalog's own image–title
pairs are the positives; every other product in the batch is a negative. No labels are used;
an optional supervised-contrastive term (``labels``) counts products sharing a label as
positives too.

Torch runs only here, at training time; applying the heads is a numpy matrix product
(:class:`Heads`), so encoding with an artifact costs one matmul more.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..encoders.base import l2_normalise

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Defaults checked on both halves of flipkart-1050's top-level categories (docs/training.md)."""

    #: the joint space's dimension when the text head learns too (``text_identity=False``)
    dim: int = 256
    #: 120 against 60: image, fused and text-to-image p@10 up on both halves (docs/evaluation.md)
    epochs: int = 120
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    #: dropout on the frozen features (the only augmentation: the features are fixed)
    dropout: float = 0.2
    #: 0.2 kept more of each modality's own structure than 0.1 or 0.05 on both halves
    temperature: float = 0.2
    #: weight of the original (frozen) vector kept next to the projection: out = [a·x ; head(x)]
    keep: float = 0.0
    seed: int = 0
    #: weight of the supervised-contrastive term (only with labels)
    supervised: float = 0.0
    #: the joint space is the text model's own: the text head is the identity (text-to-text
    #: similarity unchanged) and only the image head learns, mapping photos next to their titles
    text_identity: bool = True
    #: with ``text_identity``: the text head starts as the identity but learns too
    text_trainable: bool = False


@dataclass
class Heads:
    """The trained projections: ``weights[m]`` (in_dim, dim), ``bias[m]`` (dim,)."""

    weights: dict[str, np.ndarray]
    bias: dict[str, np.ndarray]
    keep: float = 0.0
    meta: dict[str, object] = field(default_factory=dict)

    def out_dim(self, modality: str) -> int:
        w = self.weights[modality]
        return int(w.shape[1] + (w.shape[0] if self.keep > 0 else 0))

    def apply(self, modality: str, vectors: np.ndarray) -> np.ndarray:
        """L2-normalised base vectors → L2-normalised adapted vectors."""
        x = np.asarray(vectors, dtype=np.float32)
        projected = l2_normalise(x @ self.weights[modality] + self.bias[modality])
        if self.keep > 0:
            projected = np.concatenate([self.keep * l2_normalise(x), projected], axis=1)
        return l2_normalise(projected)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {"keep": np.float32(self.keep)}
        arrays |= {f"w_{m}": w for m, w in self.weights.items()} | {f"b_{m}": b for m, b in self.bias.items()}
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Heads:
        with np.load(io.BytesIO(data)) as arrays:
            weights = {k[2:]: arrays[k] for k in arrays.files if k.startswith("w_")}
            bias = {k[2:]: arrays[k] for k in arrays.files if k.startswith("b_")}
            return cls(weights=weights, bias=bias, keep=float(arrays["keep"]))


def train_heads(
    image: np.ndarray, text: np.ndarray, config: TrainConfig | None = None, *, labels: np.ndarray | None = None,
) -> Heads:
    """Learn the two projections from paired rows of ``image`` and ``text`` (same product)."""
    import torch

    config = config or TrainConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches of a few hundred small rows: one thread, no contention
    try:
        return _train(image, text, config, labels)
    finally:
        torch.set_num_threads(threads)


def _train(image: np.ndarray, text: np.ndarray, config: TrainConfig, labels: np.ndarray | None) -> Heads:
    import torch
    from torch import nn

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    xi = torch.as_tensor(np.asarray(image, np.float32))
    xt = torch.as_tensor(np.asarray(text, np.float32))
    dim = xt.shape[1] if config.text_identity else config.dim
    heads: Any = nn.ModuleDict({"image": nn.Linear(xi.shape[1], dim), "text": nn.Linear(xt.shape[1], dim)})
    if config.text_identity:
        with torch.no_grad():
            heads["text"].weight.copy_(torch.eye(dim))
            heads["text"].bias.zero_()
        heads["text"].requires_grad_(config.text_trainable)
    drop = nn.Dropout(config.dropout)
    optimiser = torch.optim.AdamW(
        [p for p in heads.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    n = len(xi)
    steps_per_epoch = max(1, int(np.ceil(n / config.batch_size)))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.1
    )
    label_ids: Any = None
    if labels is not None and config.supervised > 0:
        label_ids = torch.as_tensor(np.unique(labels, return_inverse=True)[1])
    heads.train()
    loss_value = float("nan")
    for _epoch in range(config.epochs):
        order = rng.permutation(n)
        for start in range(0, n, config.batch_size):
            idx = torch.as_tensor(order[start : start + config.batch_size])
            if len(idx) < 2:
                continue
            zi = nn.functional.normalize(heads["image"](drop(xi[idx])), dim=1)
            zt = nn.functional.normalize(heads["text"](xt[idx] if config.text_identity else drop(xt[idx])), dim=1)
            logits = zi @ zt.T / config.temperature
            target = torch.arange(len(idx))
            loss = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
            if label_ids is not None:
                loss = loss + config.supervised * _supcon(zi, zt, label_ids[idx], config.temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            loss_value = float(loss.detach())
    heads.eval()
    seconds = time.perf_counter() - started
    logger.info("trained heads on %d pairs in %.1f s (last loss %.3f)", n, seconds, loss_value)
    return Heads(
        weights={m: heads[m].weight.detach().numpy().T.copy() for m in ("image", "text")},
        bias={m: heads[m].bias.detach().numpy().copy() for m in ("image", "text")},
        keep=config.keep,
        meta={"pairs": n, "seconds": round(seconds, 2), "loss": round(loss_value, 4)},
    )


def _supcon(zi: Any, zt: Any, labels: Any, temperature: float) -> Any:
    """Supervised contrastive term: every product of the same label is a positive, across and
    within modalities (Khosla et al. 2020, with the two modalities as the two views)."""
    import torch

    z = torch.cat([zi, zt])
    y = torch.cat([labels, labels])
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool)
    logits = logits.masked_fill(self_mask, -1e9)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_row = (log_prob * positives).sum(1) / positives.sum(1).clamp(min=1)
    return -per_row.mean()
