"""Train the item–item behaviour model from the imported events and make it live.

Baskets are orders (purchases), or else a session's (or a visitor's day's) events. Every
algorithm of :mod:`.algorithms` that fits the catalog is trained on the older 90 % of baskets and
scored on the newest 10 % (hide one item per basket, hit@10): the best one is refitted on all
baskets and goes live. No labels and no tuning to a dataset: the shop's own most recent baskets
decide. Going live = a new generation of the behaviour collection (vectors and the spec's
payload, so the spec's filters apply as for content), switched atomically, and a new live
:class:`~.models.BehaviourModel` row.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp
from django.db import transaction
from django.utils import timezone

from .. import registry
from ..index.base import PointData
from ..specs import IndexSpec, PayloadType
from . import algorithms
from .artifacts import VECTOR, artifact_dir, behaviour_index, forget_live, save, vector_dim
from .models import BehaviourModel, Event

logger = logging.getLogger(__name__)

#: neighbours kept per item
NEIGHBOURS = 100
#: share of the newest baskets held out to choose the algorithm
HOLDOUT = 0.1
#: below this many held-out baskets the choice is not measured: EASE (or cosine when too big)
MIN_HOLDOUT = 30
#: a basket's items beyond this are left out of training (bulk orders say little about pairs)
MAX_BASKET = 100


class NoEvents(ValueError):
    """Nothing to learn from yet."""


@dataclass
class Baskets:
    keys: list[str]  # object key of each item index
    baskets: list[list[int]]  # oldest first
    events: int
    latest: datetime | None


def basket_id(order: str, session: str, visitor: str, when: datetime) -> str:
    if order:
        return f"o:{order}"
    if session:
        return f"s:{session}"
    return f"v:{visitor}:{when:%Y-%m-%d}"


def load_baskets(spec: IndexSpec, *, until: datetime | None = None) -> Baskets:
    """The events of ``spec`` (up to ``until``) grouped into baskets, oldest basket first."""
    rows = Event.objects.filter(model_label=spec.label)
    if until is not None:
        rows = rows.filter(time__lte=until)
    position: dict[str, int] = {}
    grouped: dict[str, list[int]] = {}
    events = 0
    latest = None
    for order, session, visitor, object_id, when in rows.order_by("time", "pk").values_list(
        "order", "session", "visitor", "object_id", "time"
    ).iterator(chunk_size=20000):
        events += 1
        latest = when
        item = position.setdefault(object_id, len(position))
        basket = grouped.setdefault(basket_id(order, session, visitor, when), [])
        if item not in basket and len(basket) < MAX_BASKET:
            basket.append(item)
    return Baskets(list(position), [b for b in grouped.values() if b], events, latest)


def transition_matrix(spec: IndexSpec, position: dict[str, int], until: datetime | None = None) -> sp.csr_matrix:
    """Counts of "a then b" in each visitor's (or session's) imported events, in time order."""
    rows: list[int] = []
    cols: list[int] = []
    last: dict[str, int] = {}
    events = Event.objects.filter(model_label=spec.label).order_by("time", "pk")
    if until is not None:
        events = events.filter(time__lte=until)
    for visitor, session, order, object_id in events.values_list(
        "visitor", "session", "order", "object_id"
    ).iterator(chunk_size=20000):
        who = session or visitor or f"o:{order}"
        item = position.get(object_id)
        if item is None:
            continue
        before = last.get(who)
        if before is not None and before != item:
            rows.append(before)
            cols.append(item)
        last[who] = item
    n = len(position)
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))


def transition_neighbours(counts: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each item's most likely next items: ``P(b | a)`` with shrinkage, ``T_ab / (T_a + 10)``."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    return algorithms.top_k(lambda rows: counts[rows].toarray() / (totals[rows, None] + 10.0), counts.shape[0], k)


def holdout_score(neighbours: sp.csr_matrix, baskets: list[list[int]], k: int = 10, seed: int = 0,
                  ) -> dict[str, float]:
    """Hide one item of each basket (2+ items), rank by the rest: hit@k and MRR."""
    rng = random.Random(seed)
    hits = mrr = 0.0
    cases = 0
    for basket in baskets:
        if len(basket) < 2:
            continue
        hidden = rng.choice(basket)
        rest = [i for i in basket if i != hidden]
        scores = algorithms.score_rows(neighbours, rest)
        scores[rest] = -np.inf
        top = np.argsort(-scores)[:k]
        cases += 1
        found = np.flatnonzero(top == hidden)
        if len(found) and np.isfinite(scores[hidden]) and scores[hidden] > 0:
            hits += 1
            mrr += 1.0 / (found[0] + 1)
    return {f"hit@{k}": hits / max(cases, 1), "mrr": mrr / max(cases, 1), "baskets": cases}


def candidates(n_items: int) -> list[str]:
    return [a for a in algorithms.ALGORITHMS if a != "ease" or n_items <= algorithms.EASE_MAX_ITEMS]


def choose_algorithm(data: Baskets, *, seed: int = 0) -> tuple[str, dict[str, dict[str, float]]]:
    """The algorithm that ranks the newest baskets best when trained on the older ones."""
    names = candidates(len(data.keys))
    cut = int(len(data.baskets) * (1 - HOLDOUT))
    held = [b for b in data.baskets[cut:] if len(b) >= 2]
    if len(held) < MIN_HOLDOUT:
        return ("ease" if "ease" in names else "cosine"), {}
    matrix = algorithms.basket_matrix(data.baskets[:cut], len(data.keys))
    metrics = {}
    for name in names:
        idx, val = algorithms.fit(name, matrix, k=NEIGHBOURS, seed=seed)
        metrics[name] = holdout_score(algorithms.neighbour_matrix(idx, val), held, seed=seed)
        logger.info("behaviour %s on the newest %d baskets: %s", name, len(held), metrics[name])
    best = max(names, key=lambda a: (metrics[a]["hit@10"], metrics[a]["mrr"]))
    return best, metrics


def behaviour_vectors(idx: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Dense vectors whose dot products approximate the neighbour scores (truncated SVD)."""
    from scipy.sparse.linalg import svds

    n = idx.shape[0]
    rank = vector_dim(n)
    if rank >= n - 1:
        return np.ones((n, 1), dtype=np.float32)
    matrix = algorithms.neighbour_matrix(idx, val).astype(np.float64)
    u, s, _vt = svds(matrix, k=rank, random_state=0)
    return (u * np.sqrt(s)).astype(np.float32)


def train(model: Any = None, *, algorithm: str | None = None, until: datetime | None = None, seed: int = 0,
          activate: bool = True) -> BehaviourModel:
    """Train ``spec``'s behaviour model (the measured best algorithm unless ``algorithm``) and,
    with ``activate``, make it live before returning."""
    spec = registry.get_spec(model)
    started = time.perf_counter()
    data = load_baskets(spec, until=until)
    if len(data.keys) < 2 or not any(len(b) >= 2 for b in data.baskets):
        raise NoEvents(f"no baskets of two or more {spec.label} objects to learn from; run import_events first")
    metrics: dict[str, Any] = {}
    if algorithm is None:
        algorithm, metrics = choose_algorithm(data, seed=seed)
    elif algorithm not in algorithms.ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose from {', '.join(algorithms.ALGORITHMS)}")
    matrix = algorithms.basket_matrix(data.baskets, len(data.keys))
    idx, val = algorithms.fit(algorithm, matrix, k=NEIGHBOURS, seed=seed)
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    tidx, tval = transition_neighbours(
        transition_matrix(spec, {key: n for n, key in enumerate(data.keys)}, until), NEIGHBOURS
    )
    version = f"behaviour-{spec.label.replace('.', '_')}-{timezone.now():%Y%m%d%H%M%S}-{algorithm}"
    path = artifact_dir() / f"{version}.npz"
    save(path, keys=data.keys, counts=counts, idx=idx, val=val, popularity=counts.astype(np.float32),
         tidx=tidx, tval=tval)
    row = BehaviourModel.objects.create(
        model_label=spec.label, version=version, algorithm=algorithm,
        params={**algorithms.DEFAULT_PARAMS[algorithm], "neighbours": NEIGHBOURS, "seed": seed,
                "until": until.isoformat() if until else None},
        metrics=metrics, items=len(data.keys), events=data.events, path=str(path),
        seconds=time.perf_counter() - started,
    )
    if activate:
        publish(spec, row, idx, val, counts)
    return row


def publish(spec: IndexSpec, row: BehaviourModel, idx: np.ndarray, val: np.ndarray, counts: np.ndarray) -> None:
    """Fill a new generation of the behaviour collection and switch to it, then mark ``row`` live."""
    vectors = behaviour_vectors(idx, val)
    keys = [str(k) for k in np.load(row.path)["keys"]]
    schema = {**spec.full_payload_schema(), "history": PayloadType.INTEGER}
    live = behaviour_index(spec)
    new = live.start_rebuild({VECTOR: vectors.shape[1]}, schema)
    try:
        for start in range(0, len(keys), 256):
            chunk = keys[start : start + 256]
            objects = spec.get_queryset().in_bulk([spec.to_pk(k) for k in chunk])
            points = []
            for offset, key in enumerate(chunk):
                obj = objects.get(spec.to_pk(key))
                if obj is None or not spec.should_index(obj):
                    continue
                n = start + offset
                payload = {**spec.get_payload(obj), "pk": spec.object_key(obj.pk), "group": spec.get_group(obj),
                           "model": spec.label, "history": int(counts[n])}
                points.append(PointData(spec.point_id(obj.pk), {VECTOR: vectors[n].tolist()}, payload))
            new.upsert(points)
        # No optimize(): every behaviour query is restricted to a few hundred candidate ids,
        # which Qdrant answers exactly without an HNSW graph (building one costs seconds).
    except Exception:
        live.abandon_rebuild(new.generation)
        raise
    live.finish_rebuild(new)
    with transaction.atomic():
        BehaviourModel.objects.filter(model_label=spec.label, live=True).update(live=False)
        BehaviourModel.objects.filter(pk=row.pk).update(live=True)
    row.live = True
    forget_live(spec.label)
