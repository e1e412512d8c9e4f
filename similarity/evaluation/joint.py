"""Evaluation of trained adapters: typed queries ranked through the joint space, and the same
catalog before training (``similarity_evaluate --queries ... --rankings image``,
``--compare-untrained``).

Query files hold ``text,sku`` rows (the answer is one object) or ``text,label`` rows (the
relevant objects are those whose label in ``--labels`` equals it). Rankings of a typed query:
``image`` (the query's vector against the image vectors alone: text-to-image search, possible
only when image and text share a space; moved towards the photos of its best text matches, as
``search_text`` does: :mod:`similarity.feedback`), ``text``, ``fused`` (both, with the fusion weights,
over the union of each modality's top candidates, as ``search_text`` does) and ``lexical``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..feedback import feedback_matrix
from ..fusion import fuse_scores
from .catalog import DEFAULT_KS, EvalCatalog, EvaluationError
from .ranking import Ranker, mean_metrics, query_metrics

QUERY_RANKINGS = ("image", "text", "fused", "lexical")


def untrained_catalog(catalog: EvalCatalog) -> EvalCatalog:
    """``catalog`` with the plain encoders' vectors (the feature cache; encoded once if missing)."""
    from ..training.features import catalog_features

    features = catalog_features(catalog.spec)
    position = {key: i for i, key in enumerate(features.keys)}
    rows = np.array([position.get(catalog.spec.object_key(pk), -1) for pk in catalog.pks])
    if (rows < 0).any():
        raise EvaluationError(f"{int((rows < 0).sum())} indexed objects are missing from the feature cache")
    vectors = {m: features.vectors[m][rows] for m in ("image", "text")}
    present = {m: features.present[m][rows] for m in ("image", "text")}
    return replace(catalog, vectors=vectors, present=present)


def read_queries(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = set(reader.fieldnames or [])
            rows = list(reader)
    except OSError as exc:
        raise EvaluationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if "text" not in fields or not ({"sku", "label"} & fields):
        raise EvaluationError(f"{path} needs the columns text,sku or text,label")
    return rows


def evaluate_text_queries(
    catalog: EvalCatalog, path: Path, *, labels: np.ndarray | None = None, encoder: Any = None,
    rankings: Sequence[str] = QUERY_RANKINGS, ks: Sequence[int] = DEFAULT_KS,
    weights: dict[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of each ranking over the typed queries in ``path`` (see the module docstring).

    ``encoder`` embeds the queries (default: the live text encoder, adapter included);
    ``labels`` (one per catalog position) are needed for ``text,label`` rows.
    """
    rows = read_queries(path)
    encoder = encoder or registry.text_encoder()
    ranker = Ranker(catalog, weights=weights, limit=max(ks))
    position = catalog.position()
    targets: list[np.ndarray] = []
    texts: list[str] = []
    for row in rows:
        text = (row.get("text") or "").strip()
        if not text:
            continue
        if (row.get("label") or "").strip():
            if labels is None:
                raise EvaluationError(f"{path} has text,label rows: give the labels with --labels")
            relevant = np.flatnonzero(labels == row["label"].strip())
        else:
            sku = (row.get("sku") or "").strip()
            relevant = np.array([position[sku]]) if sku in position else np.array([], dtype=int)
        if len(relevant):
            targets.append(relevant)
            texts.append(text)
    if not texts:
        raise EvaluationError(f"no query in {path} names an indexed product or a label")
    vectors = np.asarray(encoder.encode(texts), dtype=np.float32)
    scores = {r: _scores(r, ranker, vectors, texts) for r in rankings}
    out = {}
    depth = max(ks)
    for ranking, matrix in scores.items():
        if matrix is None:
            continue
        per_query = []
        for q, relevant in enumerate(targets):
            gains = np.zeros(len(catalog))
            gains[relevant] = 1.0
            order = np.argsort(-matrix[q], kind="stable")
            shown = [c for c in order[:depth] if np.isfinite(matrix[q, c])]
            best = np.where(gains > 0, matrix[q], -np.inf).max()
            first = int((matrix[q] > best).sum()) + 1 if np.isfinite(best) else None
            per_query.append(query_metrics([gains[c] for c in shown], gains[gains > 0], ks, first))
        out[ranking] = {**mean_metrics(per_query), "queries": float(len(per_query))}
    return out


def _scores(ranking: str, ranker: Ranker, vectors: np.ndarray, texts: list[str]) -> np.ndarray | None:
    catalog = ranker.catalog

    def cosine(modality: str) -> np.ndarray | None:
        matrix = catalog.vectors[modality]
        if matrix.shape[1] != vectors.shape[1]:
            return None  # another space: the plain encoders cannot rank images by words
        query = vectors
        if modality == "image":  # what search_text matches against the photos (similarity.feedback)
            query = feedback_matrix(vectors, catalog.vectors["text"], matrix, catalog.present["text"],
                                    catalog.present["image"])
        out = (query @ matrix.T).astype(np.float64)
        out[:, ~catalog.present[modality]] = np.nan
        return out

    if ranking in ("image", "text"):
        found = cosine(ranking)
        return None if found is None else np.where(np.isnan(found), -np.inf, found)
    if ranking == "lexical":
        lexical = ranker.lexical_matrix()
        return np.vstack([np.asarray((ranker.lexical_query(t) @ lexical.T).todense()).ravel() for t in texts])
    if ranking == "fused":
        cosines = {m: c for m in ("image", "text") if (c := cosine(m)) is not None}
        candidate = np.zeros(next(iter(cosines.values())).shape, dtype=bool)
        for values in cosines.values():
            ranked = np.where(np.isnan(values), -np.inf, values)
            k = min(ranker.fetch, ranked.shape[1])
            top = np.argpartition(-ranked, k - 1, axis=1)[:, :k]
            rows = np.arange(len(ranked))[:, None]
            candidate[rows, top] |= np.isfinite(ranked[rows, top])
        fused = fuse_scores({m: np.where(candidate, v, np.nan) for m, v in cosines.items()}, ranker.weights)
        return np.where(np.isfinite(fused), fused, -np.inf)
    raise EvaluationError(f"unknown ranking {ranking!r} for typed queries; choose from {', '.join(QUERY_RANKINGS)}")


def untrained_weights() -> dict[str, float]:
    """What fusion uses with no adapter live: an explicit ``SIMILARITY["WEIGHTS"]``, else equal."""
    from django.conf import settings as django_settings

    from ..conf import get_settings

    if "WEIGHTS" in (getattr(django_settings, "SIMILARITY", None) or {}):
        return dict(get_settings().weights)
    return {"image": 0.5, "text": 0.5}


def query_tables(catalog: EvalCatalog, options: dict[str, Any], ks: Sequence[int],
                 rankings: Sequence[str]) -> dict[str, dict[str, float]]:
    """``similarity_evaluate --queries``: photo rows through the search services (as before),
    typed rows through :func:`evaluate_text_queries`; with ``compare_untrained`` the plain
    encoders' rankings too, as ``<ranking> (untrained)``; with ``cross_split`` (``text,label``
    rows) each half of the top-level categories again as a catalog of its own, as
    ``<ranking> [half A]``."""
    from .catalog import labels_relevance
    from .ranking import evaluate_query_file

    path = options["queries"]
    with open(path, newline="", encoding="utf-8-sig") as fh:
        fields = set(csv.DictReader(fh).fieldnames or [])
    if "image" in fields:
        if options.get("cross_split"):
            raise EvaluationError("--cross-split with --queries needs text,label rows, not photos")
        return evaluate_query_file(catalog, path, ks=ks)
    relevance = labels_relevance(catalog, options["labels"]) if options.get("labels") else None
    chosen = [r for r in rankings if r in QUERY_RANKINGS]
    parts = [("", catalog, relevance)]
    if options.get("cross_split"):
        if relevance is None:
            raise EvaluationError("--cross-split with --queries needs text,label rows and --labels")
        from .cross_split import halves, subset

        # each half a catalog of its own: its products, and the queries whose label is in it
        parts += [(f" [half {name}]", *subset(catalog, relevance, rows)) for name, rows in halves(catalog).items()]
    out: dict[str, dict[str, float]] = {}
    for suffix, part, rel in parts:
        labels = rel.labels if rel is not None else None
        if suffix and not _has_queries(path, labels):
            continue  # no query of this file is about this half's products
        found = evaluate_text_queries(part, path, labels=labels, rankings=chosen, ks=ks)
        if options.get("compare_untrained"):
            plain = evaluate_text_queries(untrained_catalog(part), path, labels=labels, rankings=chosen, ks=ks,
                                          encoder=registry.base_text_encoder(), weights=untrained_weights())
            found.update({f"{name} (untrained)": values for name, values in plain.items()})
        out.update({f"{name}{suffix}": values for name, values in found.items()})
    return out


def _has_queries(path: Path, labels: np.ndarray | None) -> bool:
    present = set(labels.tolist()) if labels is not None else set()
    return any((row.get("label") or "").strip() in present for row in read_queries(path))


def add_untrained(result: Any, catalog: EvalCatalog, relevance: Any, queries: np.ndarray,
                  rankings: Sequence[str], ks: Sequence[int], normalisation: str | None) -> None:
    """``--compare-untrained``: the same queries ranked by the plain encoders' vectors, added to
    ``result`` as ``<ranking> (untrained)`` (lexical does not change, so it is left out)."""
    from .ranking import evaluate

    plain = untrained_catalog(catalog)
    chosen = [r for r in rankings if r != "lexical"]
    other = evaluate(plain, relevance, queries=queries, rankings=chosen, ks=ks, normalisation=normalisation,
                     ranker=Ranker(plain, weights=untrained_weights(), limit=max(ks)))
    for name in chosen:
        result.metrics[f"{name} (untrained)"] = other.metrics[name]
        result.per_query[f"{name} (untrained)"] = other.per_query[name]
