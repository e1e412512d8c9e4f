"""Train the item–item behaviour model from the imported events and make it live.

Baskets are orders (purchases), or else a session's (or a visitor's day's) events. Every
algorithm of :mod:`.algorithms` that fits the catalog is trained on the older 90 % of baskets and
scored on the newest 10 % (hide one item per basket, hit@10): the best one is refitted on all
baskets and goes live. No labels and no tuning to a dataset: the shop's own most recent baskets
decide. The same held-out cut also chooses how ``recommended_for_you`` scores recent views
(:func:`choose_mix`): each visitor's events after it are sessions whose next item is predicted from
transitions and the item–item model learned before it. Going live = a new generation of the
behaviour collection (vectors and the spec's payload, so the spec's filters apply as for
content), switched atomically, and a new live :class:`~.models.BehaviourModel` row.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
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
#: the recent-views mixes tried at training time: the item–item term's weight next to the
#: transitions, and a view's weight relative to the next newer one
MIX_COOCCURRENCE = (0.0, 0.1, 0.25, 0.5, 1.0)
MIX_RECENCY = (0.1, 0.25, 0.5)
#: next-item positions of the held-out sessions that choose the mix at most (a seeded sample)
MIX_POSITIONS = 2000
#: recent views a position is predicted from (as the session keeps)
MIX_HISTORY = 20


class NoEvents(ValueError):
    """Nothing to learn from yet."""


@dataclass
class Baskets:
    keys: list[str]  # object key of each item index
    baskets: list[list[int]]  # oldest first
    events: int
    latest: datetime | None
    starts: list[datetime] = field(default_factory=list)  # each basket's first event


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
    starts: dict[str, datetime] = {}
    events = 0
    latest = None
    for order, session, visitor, object_id, when in rows.order_by("time", "pk").values_list(
        "order", "session", "visitor", "object_id", "time"
    ).iterator(chunk_size=20000):
        events += 1
        latest = when
        item = position.setdefault(object_id, len(position))
        name = basket_id(order, session, visitor, when)
        basket = grouped.setdefault(name, [])
        starts.setdefault(name, when)
        if item not in basket and len(basket) < MAX_BASKET:
            basket.append(item)
    names = [name for name, b in grouped.items() if b]
    return Baskets(list(position), [grouped[n] for n in names], events, latest, [starts[n] for n in names])


def visitor_sequences(spec: IndexSpec, position: dict[str, int], until: datetime | None = None,
                      ) -> list[list[tuple[int, datetime]]]:
    """Each visitor's (or session's) imported events in time order as (item, time), consecutive
    repeats removed; objects not in ``position`` are left out."""
    sequences: dict[str, list[tuple[int, datetime]]] = {}
    events = Event.objects.filter(model_label=spec.label).order_by("time", "pk")
    if until is not None:
        events = events.filter(time__lte=until)
    for visitor, session, order, object_id, when in events.values_list(
        "visitor", "session", "order", "object_id", "time"
    ).iterator(chunk_size=20000):
        item = position.get(object_id)
        if item is None:
            continue
        sequence = sequences.setdefault(session or visitor or f"o:{order}", [])
        if not sequence or sequence[-1][0] != item:
            sequence.append((item, when))
    return list(sequences.values())


def transition_counts(sequences: list[list[tuple[int, datetime]]], n: int, before: datetime | None = None,
                      ) -> sp.csr_matrix:
    """Counts of "a then b" in the sequences (only events before ``before``, if given)."""
    rows: list[int] = []
    cols: list[int] = []
    for sequence in sequences:
        items = [item for item, when in sequence if before is None or when < before]
        rows.extend(items[:-1])
        cols.extend(items[1:])
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))


def transition_matrix(spec: IndexSpec, position: dict[str, int], until: datetime | None = None) -> sp.csr_matrix:
    """Counts of "a then b" in each visitor's (or session's) imported events, in time order."""
    return transition_counts(visitor_sequences(spec, position, until), len(position))


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


def choose_algorithm(data: Baskets, *, seed: int = 0,
                     ) -> tuple[str, dict[str, dict[str, float]], dict[str, sp.csr_matrix]]:
    """The algorithm that ranks the newest baskets best when trained on the older ones (and the
    neighbours each had on the older ones)."""
    names = candidates(len(data.keys))
    cut = int(len(data.baskets) * (1 - HOLDOUT))
    held = [b for b in data.baskets[cut:] if len(b) >= 2]
    if len(held) < MIN_HOLDOUT:
        return ("ease" if "ease" in names else "cosine"), {}, {}
    matrix = algorithms.basket_matrix(data.baskets[:cut], len(data.keys))
    metrics = {}
    fitted = {}
    for name in names:
        idx, val = algorithms.fit(name, matrix, k=NEIGHBOURS, seed=seed)
        fitted[name] = algorithms.neighbour_matrix(idx, val)
        metrics[name] = holdout_score(fitted[name], held, seed=seed)
        logger.info("behaviour %s on the newest %d baskets: %s", name, len(held), metrics[name])
    best = max(names, key=lambda a: (metrics[a]["hit@10"], metrics[a]["mrr"]))
    return best, metrics, fitted


def choose_mix(sequences: list[list[tuple[int, datetime]]], cut: datetime, neighbours: sp.csr_matrix, *,
               seed: int = 0, k: int = 10) -> tuple[algorithms.Mix, dict[str, Any]]:
    """The :class:`~.algorithms.Mix` of recent views that predicts the next item best on the
    held-out events (each visitor's from ``cut`` on, a session of its own, as the evaluation's),
    from transitions counted before ``cut`` and ``neighbours`` fitted on the baskets before it.
    Scored as served (:func:`~.algorithms.sequence_scores`, the current item never shown), without
    content and filters. Too few held-out positions: the defaults, unmeasured."""
    n = neighbours.shape[0]
    tidx, tval = transition_neighbours(transition_counts(sequences, n, before=cut), NEIGHBOURS)
    transitions = algorithms.neighbour_matrix(tidx, tval)
    held = [[item for item, when in sequence if when >= cut] for sequence in sequences]
    held = [sequence for sequence in held if len(sequence) >= 2]
    positions = [(s, t) for s, sequence in enumerate(held) for t in range(1, len(sequence))]
    if len(positions) < MIN_HOLDOUT:
        return algorithms.Mix(), {}
    if len(positions) > MIX_POSITIONS:
        positions = random.Random(seed).sample(positions, MIX_POSITIONS)
    grid = [algorithms.Mix(c, r) for r in MIX_RECENCY for c in MIX_COOCCURRENCE]
    hits = np.zeros(len(grid))
    reciprocal = np.zeros(len(grid))
    for s, t in positions:
        seen = held[s][max(0, t - MIX_HISTORY) : t]
        target = held[s][t]
        for r, recency in enumerate(MIX_RECENCY):
            # sequence_scores for every weight of the item–item term, its two parts summed once
            weights = algorithms.Mix(recency=recency).weights(len(seen))
            following = algorithms.unit(algorithms.score_rows(transitions, seen, weights))
            together = algorithms.unit(algorithms.score_rows(neighbours, seen, weights))
            for c, cooccurrence in enumerate(MIX_COOCCURRENCE):
                scores = following + cooccurrence * together if cooccurrence > 0 else following.copy()
                scores[seen[-1]] = 0.0  # the current item is never shown
                if scores[target] <= 0:
                    continue
                rank = int(np.count_nonzero(scores > scores[target])) + 1
                if rank <= k:
                    g = r * len(MIX_COOCCURRENCE) + c
                    hits[g] += 1
                    reciprocal[g] += 1.0 / rank
    best = max(range(len(grid)), key=lambda g: (hits[g], reciprocal[g]))
    table = {f"{mix.cooccurrence:g}/{mix.recency:g}": [round(hits[g] / len(positions), 4),
                                                        round(reciprocal[g] / len(positions), 4)]
             for g, mix in enumerate(grid)}
    report = {"cooccurrence": grid[best].cooccurrence, "recency": grid[best].recency,
              f"hit@{k}": hits[best] / len(positions), "mrr": reciprocal[best] / len(positions),
              "positions": len(positions), "grid": table}
    logger.info("recent views: mix %s on %d held-out next items: hit@%d %.4f", grid[best], len(positions), k,
                report[f"hit@{k}"])
    return grid[best], report


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
    fitted: dict[str, sp.csr_matrix] = {}
    if algorithm is None:
        algorithm, metrics, fitted = choose_algorithm(data, seed=seed)
    elif algorithm not in algorithms.ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose from {', '.join(algorithms.ALGORITHMS)}")
    matrix = algorithms.basket_matrix(data.baskets, len(data.keys))
    idx, val = algorithms.fit(algorithm, matrix, k=NEIGHBOURS, seed=seed)
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    sequences = visitor_sequences(spec, {key: n for n, key in enumerate(data.keys)}, until)
    tidx, tval = transition_neighbours(transition_counts(sequences, len(data.keys)), NEIGHBOURS)
    mix, next_item = _validated_mix(data, sequences, algorithm, fitted, seed)
    version = f"behaviour-{spec.label.replace('.', '_')}-{timezone.now():%Y%m%d%H%M%S}-{algorithm}"
    path = artifact_dir() / f"{version}.npz"
    save(path, keys=data.keys, counts=counts, idx=idx, val=val, popularity=counts.astype(np.float32),
         tidx=tidx, tval=tval, mix=mix)
    row = BehaviourModel.objects.create(
        model_label=spec.label, version=version, algorithm=algorithm,
        params={**algorithms.DEFAULT_PARAMS[algorithm], "neighbours": NEIGHBOURS, "seed": seed,
                "until": until.isoformat() if until else None,
                "recent_views": {"cooccurrence": mix.cooccurrence, "recency": mix.recency, **next_item}},
        metrics=metrics, items=len(data.keys), events=data.events, path=str(path),
        seconds=time.perf_counter() - started,
    )
    if activate:
        publish(spec, row, idx, val, counts)
    return row


def _validated_mix(data: Baskets, sequences: list[list[tuple[int, datetime]]], algorithm: str,
                   fitted: dict[str, sp.csr_matrix], seed: int) -> tuple[algorithms.Mix, dict[str, Any]]:
    """:func:`choose_mix` at the cut of :func:`choose_algorithm` (the newest ``HOLDOUT`` of baskets),
    with ``algorithm`` fitted on the older baskets (reused when the choice fitted it)."""
    cut = int(len(data.baskets) * (1 - HOLDOUT))
    if len(data.baskets) - cut < MIN_HOLDOUT or cut < 1 or len(data.starts) != len(data.baskets):
        return algorithms.Mix(), {}
    older = fitted.get(algorithm)
    if older is None:
        idx, val = algorithms.fit(algorithm, algorithms.basket_matrix(data.baskets[:cut], len(data.keys)),
                                  k=NEIGHBOURS, seed=seed)
        older = algorithms.neighbour_matrix(idx, val)
    return choose_mix(sequences, data.starts[cut], older, seed=seed)


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
