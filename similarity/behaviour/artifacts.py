"""Trained behaviour models on disk, the live one per spec, and the behaviour collection.

An artifact is an ``.npz`` file (item keys, history counts, neighbour indices and scores, the
transitions, the validated :class:`~.algorithms.Mix` of recent views) under ``<VAR>/behaviour/``;
its :class:`~.models.BehaviourModel` row says which one is live. Each process keeps the live
artifact in memory and notices a newer live version within ``LIVE_CHECK_SECONDS`` (one cached
query).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from django.conf import settings
from django.utils.module_loading import import_string

from .. import cache_guard, registry
from ..conf import get_settings
from .algorithms import Mix, neighbour_matrix
from .models import BehaviourModel

#: the named vector of the behaviour collection
VECTOR = "behaviour"
#: dimension of the behaviour vectors stored in Qdrant (a truncated SVD of the neighbour matrix)
VECTOR_DIM = 32
LIVE_CHECK_SECONDS = 30
_lock = threading.Lock()
_loaded: dict[str, Artifact] = {}


@dataclass
class Artifact:
    version: str
    keys: np.ndarray  # object keys (text), one per item
    counts: np.ndarray  # baskets/sessions each item appears in (its amount of history)
    neighbours: sp.csr_matrix
    popularity: np.ndarray  # baskets per item (the popularity baseline)
    #: the next item of a visitor's sequence: row a = P(b | a) (recommended from recent views)
    transitions: sp.csr_matrix | None = None
    #: how recent views are scored, validated at training time (older artifacts: the defaults)
    mix: Mix = field(default_factory=Mix)
    position: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.position = {str(k): n for n, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)


def vector_dim(items: int) -> int:
    """The behaviour vectors' dimension for a model of ``items`` items."""
    return max(1, min(VECTOR_DIM, items - 2))


def artifact_dir() -> Path:
    default = Path(get_settings().index.path).parent / "behaviour"
    root = Path(getattr(settings, "SIMILARITY_BEHAVIOUR_DIR", "") or default)
    root.mkdir(parents=True, exist_ok=True)
    return root


def save(path: Path, *, keys: list[str], counts: np.ndarray, idx: np.ndarray, val: np.ndarray,
         popularity: np.ndarray, tidx: np.ndarray, tval: np.ndarray, mix: Mix | None = None) -> None:
    mix = mix or Mix()
    with open(path, "wb") as fh:
        np.savez_compressed(fh, keys=np.asarray(keys, dtype=str), counts=counts.astype(np.float32),
                            idx=idx.astype(np.int32), val=val.astype(np.float32),
                            popularity=popularity.astype(np.float32),
                            tidx=tidx.astype(np.int32), tval=tval.astype(np.float32),
                            mix=np.asarray([mix.cooccurrence, mix.recency], dtype=np.float64))


def load(row: BehaviourModel) -> Artifact:
    with np.load(row.path, allow_pickle=False) as data:
        return Artifact(
            version=row.version, keys=data["keys"], counts=data["counts"],
            neighbours=neighbour_matrix(data["idx"], data["val"]), popularity=data["popularity"],
            transitions=neighbour_matrix(data["tidx"], data["tval"]) if "tidx" in data else None,
            # artifacts from before the validated mix keep serving as they did
            mix=Mix(*(float(v) for v in data["mix"])) if "mix" in data else Mix(),
        )


def _live_version(label: str) -> str | None:
    key = f"similarity:behaviour:live:{label}"
    version = cache_guard.get(key)
    if version is None:
        version = (
            BehaviourModel.objects.filter(model_label=label, live=True).values_list("version", flat=True).first()
            or ""
        )
        cache_guard.set(key, version, LIVE_CHECK_SECONDS)
    return version or None


def live_artifact(spec: Any = None) -> Artifact | None:
    """The live model of ``spec`` (a spec, model or label; ``None`` before any training)."""
    spec = registry.get_spec(spec)
    version = _live_version(spec.label)
    if version is None:
        return None
    with _lock:
        current = _loaded.get(spec.label)
        if current is not None and current.version == version:
            return current
    row = BehaviourModel.objects.filter(version=version).first()
    if row is None or not Path(row.path).is_file():
        return None
    artifact = load(row)
    with _lock:
        _loaded[spec.label] = artifact
    return artifact


def forget_live(label: str) -> None:
    """After a new model went live: this process reloads at once (others within the cache time)."""
    cache_guard.invalidate("forget the live model", lambda c: c.delete(f"similarity:behaviour:live:{label}"))
    with _lock:
        _loaded.pop(label, None)


def behaviour_index(spec: Any = None) -> Any:
    """The behaviour collection of ``spec`` (``<collection>-behaviour``), through the same
    ``VectorIndex`` backend as content, cached (and closed on reset) like the content index."""
    spec = registry.get_spec(spec)
    conf = get_settings().index
    return registry._cached(
        f"index:{spec.label}:behaviour",
        lambda: import_string(conf.backend)(
            url=conf.url, api_key=conf.api_key, path=conf.path,
            collection=f"{spec.collection_name(conf.collection)}-behaviour",
            lock_timeout=conf.lock_timeout, timeout=conf.timeout, tuning=conf,
        ),
    )
