"""Score the behaviour widgets on events that were *not* imported (``similarity_evaluate --task``).

``basket``: for every order of the file with 2 to 100 distinct known objects, one (seeded) is
hidden and the rest asked for "bought together"; ``next-item``: each session's objects in time
order (consecutive repeats removed), the next one predicted from those seen so far. Only what
was imported and trained before is used. Rankings of the same run:

- the served widget (``bought_together`` / ``recommended_for_you``), exactly as pages get it;
- ``behaviour``: the live model alone, no content, no filters;
- ``cosine``: co-occurrence normalised for popularity (shrinkage 10);
- ``cooccurrence``: raw co-occurrence counts; ``transitions`` (next-item): counts of a → b;
- ``popularity``; ``content``: the anchors' content neighbours alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import registry
from ..specs import IndexSpec
from . import algorithms, serving
from .artifacts import live_artifact
from .importer import SkuResolver, parse_time, read_rows
from .train import MAX_BASKET, load_baskets, transition_matrix

#: next-item positions scored at most (a seeded sample beyond it)
MAX_POSITIONS = 3000
#: recent views the served next-item ranking looks at
HISTORY = 20


class EvaluationError(ValueError):
    pass


#: bootstrap resamples for the confidence intervals
RESAMPLES = 2000


@dataclass
class Scores:
    """Hits and reciprocal ranks per ranking, kept per case for the paired bootstrap.

    ``group`` of a case is what is resampled: the case itself (baskets, independent orders) or
    its session (next-item: positions of one session are not independent of each other).
    """

    k: int
    cases: int = 0
    hits: dict[str, float] = field(default_factory=dict)
    rr: dict[str, float] = field(default_factory=dict)
    per_case: dict[str, dict[int, float]] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)

    def start(self, group: str | None = None) -> None:
        """A new case (call before its ``add`` calls)."""
        self.groups.append(group if group is not None else str(self.cases))
        self.cases += 1

    def add(self, ranking: str, ranked: list[str], target: str) -> None:
        top = ranked[: self.k]
        self.hits.setdefault(ranking, 0.0)
        self.rr.setdefault(ranking, 0.0)
        if target in top:
            self.hits[ranking] += 1
            self.rr[ranking] += 1.0 / (top.index(target) + 1)
            self.per_case.setdefault(ranking, {})[self.cases - 1] = 1.0 / (top.index(target) + 1)

    def table(self, served: str | None = None, seed: int = 0) -> dict[str, dict[str, Any]]:
        """``{ranking: {"hit@k": v, "mrr": v, "ci95": ...}}``; with ``served``, every other ranking
        also gets ``"served_minus_this"``: the paired difference (served − this) and its 95 %
        interval, ``[difference, low, high]`` per metric (a seeded bootstrap over the groups)."""
        n = max(self.cases, 1)
        out: dict[str, dict[str, Any]] = {
            r: {f"hit@{self.k}": self.hits[r] / n, "mrr": self.rr[r] / n} for r in self.hits
        }
        if self.cases < 2:
            return out
        resampled = self._resampled(seed)
        for ranking in out:
            out[ranking]["ci95"] = {name: _interval(values) for name, values in resampled(ranking).items()}
        if served in out:
            base = resampled(served)
            for ranking in out:
                if ranking == served:
                    continue
                other = resampled(ranking)
                out[ranking]["served_minus_this"] = {
                    name: [out[served][name] - out[ranking][name], *_interval(base[name] - other[name])]
                    for name in base
                }
        return out

    def _resampled(self, seed: int) -> Callable[[str], dict[str, np.ndarray]]:
        """The metrics of each ranking over the same ``RESAMPLES`` resamples of the groups."""
        names = sorted(set(self.groups))
        index = {g: i for i, g in enumerate(names)}
        of_case = np.array([index[g] for g in self.groups])
        sizes = np.bincount(of_case, minlength=len(names)).astype(np.float32)
        rng = np.random.default_rng(seed)
        # how often each group is drawn in each resample (a multinomial draw of the group count)
        counts = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=RESAMPLES).astype(np.float32)
        totals = counts @ sizes

        def resampled(ranking: str) -> dict[str, np.ndarray]:
            hit, rr = np.zeros(len(names), np.float32), np.zeros(len(names), np.float32)
            for case, reciprocal in self.per_case.get(ranking, {}).items():
                hit[of_case[case]] += 1
                rr[of_case[case]] += reciprocal
            return {f"hit@{self.k}": counts @ hit / totals, "mrr": counts @ rr / totals}

        return resampled


def _interval(values: np.ndarray) -> list[float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


@dataclass
class Training:
    """What was learned before: item positions, raw co-occurrence, transitions, popularity."""

    spec: IndexSpec
    keys: list[str]
    position: dict[str, int]
    cooccurrence: sp.csr_matrix
    cosine: sp.csr_matrix
    transitions: sp.csr_matrix
    popularity: np.ndarray

    @classmethod
    def load(cls, spec: IndexSpec) -> Training:
        data = load_baskets(spec)
        if not data.keys:
            raise EvaluationError(f"no events of {spec.label} were imported; run import_events first")
        n = len(data.keys)
        matrix = algorithms.basket_matrix(data.baskets, n)
        cooc = (matrix.T @ matrix).tocsr()
        popularity = np.asarray(cooc.diagonal()).ravel().astype(np.float64)
        cooc.setdiag(0)
        cooc.eliminate_zeros()
        idx, val = algorithms.fit("cosine", matrix, k=algorithms_k(n))
        position = {k: i for i, k in enumerate(data.keys)}
        return cls(spec, data.keys, position, cooc, algorithms.neighbour_matrix(idx, val),
                   transition_matrix(spec, position), popularity)

    def rank(self, matrix: sp.csr_matrix, anchors: list[str], k: int, exclude: set[str]) -> list[str]:
        items = [self.position[a] for a in anchors if a in self.position]
        scores = algorithms.score_rows(matrix, items) if items else np.zeros(len(self.keys))
        return self._top(scores, k, exclude)

    def popular(self, k: int, exclude: set[str]) -> list[str]:
        return self._top(self.popularity.copy(), k, exclude)

    def _top(self, scores: np.ndarray, k: int, exclude: set[str]) -> list[str]:
        order = np.argsort(-scores, kind="stable")[: k + len(exclude)]
        return [self.keys[i] for i in order if scores[i] > 0 and self.keys[i] not in exclude][:k]


def algorithms_k(n: int) -> int:
    return min(100, max(n - 1, 1))


def read_events(path: Path, columns: dict[str, str], spec: IndexSpec, since: datetime | None,
                encoding: str = "utf-8") -> Iterator[tuple[datetime, str, str, str, str]]:
    """(time, order, session or visitor, object key, file order) of the file's known objects."""
    resolver = SkuResolver(spec)
    batch: list[dict[str, str]] = []

    def flush() -> Iterator[tuple[datetime, str, str, str, str]]:
        resolver.resolve({r["sku"] for r in batch if r.get("sku")})
        for row in batch:
            key = resolver[row.get("sku", "")]
            try:
                when = parse_time(row["time"])
            except (ValueError, KeyError, OverflowError):
                continue
            if key is None or (since is not None and when < since):
                continue
            yield when, row.get("order", ""), row.get("session", "") or row.get("visitor", ""), key, ""

    for _number, row in read_rows(path, columns, encoding):
        batch.append(row)
        if len(batch) >= 5000:
            yield from flush()
            batch = []
    yield from flush()


def evaluate_basket(path: Path, *, columns: dict[str, str] | None = None, k: int = 10, seed: int = 0,
                    since: datetime | None = None, model: Any = None, max_cases: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, Any]]:
    spec = registry.get_spec(model)
    training = Training.load(spec)
    orders: dict[str, list[str]] = {}
    for _when, order, _who, key, _n in read_events(path, columns or {}, spec, since):
        if order:
            items = orders.setdefault(order, [])
            if key not in items:
                items.append(key)
    cases = [items for items in orders.values() if 2 <= len(items) <= MAX_BASKET]
    if not cases:
        raise EvaluationError(f"{path.name} has no orders of 2 to {MAX_BASKET} known objects")
    rng = random.Random(seed)
    if max_cases is not None and len(cases) > max_cases:
        cases = rng.sample(cases, max_cases)
    scores = Scores(k)
    objects = _objects(spec, {key for items in cases for key in items})
    for n, items in enumerate(cases):
        hidden = rng.choice(sorted(items))
        rest = [key for key in items if key != hidden]
        exclude = set(rest)
        scores.start()
        served = serving.bought_together_cart([objects[key] for key in rest if key in objects], limit=k)
        scores.add("bought_together", [spec.object_key(h.pk) for h in served.hits], hidden)
        _baselines(scores, training, rest, hidden, k, exclude, objects)
        if progress:
            progress(n + 1, len(cases))
    return scores.table(served="bought_together", seed=seed)


def evaluate_next_item(path: Path, *, columns: dict[str, str] | None = None, k: int = 10, seed: int = 0,
                       since: datetime | None = None, model: Any = None, max_positions: int = MAX_POSITIONS,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, Any]]:
    spec = registry.get_spec(model)
    training = Training.load(spec)
    rows = sorted(read_events(path, columns or {}, spec, since), key=lambda r: r[0])
    sessions: dict[str, list[str]] = {}
    for _when, order, who, key, _n in rows:
        seq = sessions.setdefault(who or f"o:{order}", [])
        if not seq or seq[-1] != key:
            seq.append(key)
    positions = [(who, t) for who, seq in sessions.items() for t in range(1, len(seq))]
    if not positions:
        raise EvaluationError(f"{path.name} has no sessions of two or more objects")
    rng = random.Random(seed)
    if len(positions) > max_positions:
        positions = rng.sample(positions, max_positions)
    scores = Scores(k)
    objects = _objects(spec, {sessions[who][t] for who, t in positions} | {
        key for who, t in positions for key in sessions[who][max(0, t - HISTORY) : t]})
    for n, (who, t) in enumerate(positions):
        seen = sessions[who][max(0, t - HISTORY) : t]
        target, current = sessions[who][t], seen[-1]
        scores.start(group=who)  # a session's positions are resampled together
        served = serving.recommended_from_views(spec, seen, current=objects.get(current), limit=k)
        scores.add("recommended_for_you", [spec.object_key(h.pk) for h in served.hits], target)
        scores.add("transitions", training.rank(training.transitions, [current], k, {current}), target)
        _baselines(scores, training, seen, target, k, {current}, objects, content_from=[current])
        if progress:
            progress(n + 1, len(positions))
    return scores.table(served="recommended_for_you", seed=seed)


def _objects(spec: IndexSpec, keys: set[str]) -> dict[str, Any]:
    loaded = spec.get_queryset().in_bulk([spec.to_pk(k) for k in keys])
    return {spec.object_key(pk): obj for pk, obj in loaded.items()}


def _baselines(scores: Scores, training: Training, anchors: list[str], target: str, k: int, exclude: set[str],
               objects: dict[str, Any], content_from: list[str] | None = None) -> None:
    artifact = live_artifact(training.spec)
    if artifact is not None:
        items = [artifact.position[a] for a in anchors if a in artifact.position]
        raw = algorithms.score_rows(artifact.neighbours, items)
        order = np.argsort(-raw)[: k + len(exclude)]
        scores.add("behaviour", [str(artifact.keys[i]) for i in order
                                 if raw[i] > 0 and str(artifact.keys[i]) not in exclude][:k], target)
    scores.add("cosine", training.rank(training.cosine, anchors, k, exclude), target)
    scores.add("cooccurrence", training.rank(training.cooccurrence, anchors, k, exclude), target)
    scores.add("popularity", training.popular(k, exclude), target)
    anchors_objects = [objects[a] for a in (content_from or anchors) if a in objects]
    content = serving._content(anchors_objects, k + len(exclude), {})
    ranked = sorted(content, key=lambda pk: -content[pk][0])
    spec = training.spec
    scores.add("content", [key for key in (spec.object_key(pk) for pk in ranked) if key not in exclude][:k], target)
