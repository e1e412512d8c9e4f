"""The catalog as the evaluation sees it (objects and their stored vectors), and relevance:
the spec's taxonomy at a depth, a labels file, or a judgments file."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..backlog import iter_batches
from ..exceptions import SimilarityError

logger = logging.getLogger(__name__)

RANKINGS = ("image", "text", "fused", "lexical")
DEFAULT_KS = (1, 5, 10)


class EvaluationError(SimilarityError):
    """The evaluation cannot run as asked (no products indexed, a bad labels file...)."""


# ---------------------------------------------------------------------------------------------
# The catalog as the evaluation sees it
# ---------------------------------------------------------------------------------------------
@dataclass
class EvalCatalog:
    """Every indexed object of one spec: identity (``skus``: the spec's lookup values), text,
    taxonomy path (the spec's ``get_taxonomy``) and vectors."""

    pks: list[int]
    skus: list[str]
    titles: list[str]
    texts: list[str]
    categories: list[list[str]]  # category names from the top level down ([] = none)
    groups: np.ndarray
    vectors: dict[str, np.ndarray]  # modality → (n, dim), zero rows where missing
    present: dict[str, np.ndarray]  # modality → (n,) bool
    objects: list[Any] = field(repr=False, default_factory=list)
    spec: Any = field(repr=False, default=None)

    def __len__(self) -> int:
        return len(self.pks)

    def position(self) -> dict[str, int]:
        return {sku: i for i, sku in enumerate(self.skus)}


def load_catalog(model: Any = None, *, index: Any = None, batch_size: int = 256) -> EvalCatalog:
    """Read the objects (keyset pages) and their stored vectors from the index."""
    spec = registry.get_spec(model)
    index = index or registry.vector_index(spec)
    objects: list[Any] = []
    stored: dict[str, Any] = {}
    queryset = spec.get_queryset()
    for batch in iter_batches(queryset, batch_size):
        page = list(queryset.filter(pk__in=batch).order_by("pk"))
        objects.extend(page)
        stored.update(index.retrieve([spec.point_id(o.pk) for o in page], with_vectors=True))
    objects = [o for o in objects if spec.point_id(o.pk) in stored]
    if not objects:
        raise EvaluationError(
            "no product is indexed; run `manage.py similarity_reindex --all` before evaluating."
        )
    n = len(objects)
    vectors: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    points = [stored[spec.point_id(o.pk)] for o in objects]
    for modality in ("image", "text"):
        dim = next((len(p.vectors[modality]) for p in points if modality in p.vectors), 0)
        matrix = np.zeros((n, dim), dtype=np.float32)
        have = np.zeros(n, dtype=bool)
        for i, point in enumerate(points):
            if modality in point.vectors:
                matrix[i] = point.vectors[modality]
                have[i] = True
        vectors[modality], present[modality] = matrix, have
    return EvalCatalog(
        pks=[o.pk for o in objects],
        skus=[spec.lookup_value(o) for o in objects],
        titles=[spec.get_title(o) for o in objects],
        texts=[spec.get_text(o) for o in objects],
        categories=[spec.get_taxonomy(o) for o in objects],
        groups=np.array([spec.get_group(o) for o in objects]),
        vectors=vectors, present=present, objects=objects, spec=spec,
    )


# ---------------------------------------------------------------------------------------------
# Relevance
# ---------------------------------------------------------------------------------------------
@dataclass
class Relevance:
    """Graded relevance between catalog positions. ``labels``: same non-empty label = gain 1;
    ``pairs``: explicit (query, candidate) → gain (judgments)."""

    name: str
    labels: np.ndarray | None = None
    pairs: dict[int, dict[int, float]] | None = None
    #: the label strings a query's text would leak (for the leak warning)
    label_names: list[str] | None = None

    def gains(self, queries: np.ndarray, n: int) -> np.ndarray:
        out = np.zeros((len(queries), n), dtype=np.float32)
        if self.labels is not None:
            labels = self.labels
            out[:] = (labels[queries][:, None] == labels[None, :]) & (labels[queries][:, None] != "")
        elif self.pairs is not None:
            for row, q in enumerate(queries):
                for c, gain in self.pairs.get(int(q), {}).items():
                    out[row, c] = gain
        out[np.arange(len(queries)), queries] = 0.0  # the query itself is never a result
        return out

    def query_candidates(self, n: int) -> np.ndarray:
        """Positions that can be asked: they have at least one relevant other item."""
        if self.labels is not None:
            values, counts = np.unique(self.labels, return_counts=True)
            many = {v for v, c in zip(values, counts, strict=True) if v != "" and c > 1}
            return np.array([i for i, label in enumerate(self.labels) if label in many], dtype=int)
        assert self.pairs is not None
        return np.array(sorted(q for q, row in self.pairs.items() if any(g > 0 for g in row.values())),
                        dtype=int)


def category_relevance(catalog: EvalCatalog, level: int) -> Relevance:
    if level < 1:
        raise EvaluationError("--level counts from 1 (the top-level category)")
    labels = np.array([" > ".join(c[:level]) if len(c) >= level else "" for c in catalog.categories])
    if not (labels != "").any():
        raise EvaluationError(f"no product has a category {level} levels deep")
    names = [c[level - 1] if len(c) >= level else "" for c in catalog.categories]
    return Relevance(f"same category at level {level}", labels=labels, label_names=names)


def labels_relevance(catalog: EvalCatalog, path: Path) -> Relevance:
    rows = _read_csv(path, ("sku", "label"))
    by_sku = {row["sku"].strip(): row["label"].strip() for row in rows}
    labels = np.array([by_sku.get(sku, "") for sku in catalog.skus])
    if not (labels != "").any():
        raise EvaluationError(f"none of the SKUs in {path} is in the indexed catalog")
    return Relevance(f"same label in {path.name}", labels=labels, label_names=list(labels))


def judgments_relevance(catalog: EvalCatalog, path: Path) -> Relevance:
    rows = _read_csv(path, ("sku_a", "sku_b", "relevance"))
    position = catalog.position()
    pairs: dict[int, dict[int, float]] = {}
    skipped = 0
    for row in rows:
        a, b = position.get(row["sku_a"].strip()), position.get(row["sku_b"].strip())
        if a is None or b is None:
            skipped += 1
            continue
        try:
            gain = float(row["relevance"])
        except ValueError:
            raise EvaluationError(f"{path}: relevance {row['relevance']!r} is not a number") from None
        pairs.setdefault(a, {})[b] = gain
    if skipped:
        logger.warning("%d judgments name SKUs that are not indexed; skipped", skipped)
    if not pairs:
        raise EvaluationError(f"no judgment in {path} names two indexed products")
    return Relevance(f"judgments in {path.name}", pairs=pairs)


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise EvaluationError(f"{path} needs the columns {', '.join(columns)} (missing {missing})")
            return list(reader)
    except OSError as exc:
        raise EvaluationError(f"cannot read {path}: {exc.strerror or exc}") from exc


def label_leak(catalog: EvalCatalog, relevance: Relevance, queries: np.ndarray) -> float:
    """Share of queries whose encoded text contains the label it is judged by."""
    if not relevance.label_names or not len(queries):
        return 0.0
    hits = 0
    for q in queries:
        label = relevance.label_names[q].strip().lower()
        if label and label in catalog.texts[q].lower():
            hits += 1
    return hits / len(queries)
