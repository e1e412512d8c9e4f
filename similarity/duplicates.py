"""Duplicate listings: the same product uploaded twice, a re-shot photo, a reseller's copy.

Candidates are each object's nearest neighbours in the vector index (image and text), so a scan
costs two queries per object, not a comparison of every pair. Each candidate pair is then judged
on three signals:

* a perceptual hash of the first photo (``imagehash.phash``, 64 bits): survives re-encoding and
  resizing; two unrelated photos differ in about half the bits;
* the image cosine of the stored vectors: survives crops and re-shoots;
* title similarity (``rapidfuzz`` token-set ratio of normalised titles): survives reordered and
  added words.

``visual = max(hash similarity, image cosine)`` and ``score = min(visual, title)``: a duplicate
must look like the other listing *and* be called like it, which keeps apart the many products
that share a photo style (a brand's studio shots) or a title pattern (a brand's range). The
reasons say which signals fired. The review queue (``DuplicateCandidate``) remembers decisions.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import registry
from .backlog import iter_batches
from .index.base import SearchFilter, VectorIndex
from .specs import IndexSpec

logger = logging.getLogger(__name__)

#: neighbours per modality a pair is looked for among
NEIGHBOURS = 8
#: pairs scoring at least this are reported (docs/staff-tools.md: how it was checked)
DEFAULT_THRESHOLD = 0.85
#: Hamming distance of 64-bit pHashes at or under which two photos are "the same picture"
#: (imagehash's usual cut-off; unrelated photos sit near 32)
SAME_PHOTO_BITS = 10
#: image cosine at or above which two photos are "near-identical" in the reasons
TIGHT_COSINE = 0.9
#: title similarity at or above which the reasons say "near-identical title"
CLOSE_TITLE = 0.9

_PUNCTUATION = re.compile(r"[^\w\s]+")


@dataclass
class DuplicatePair:
    key_a: str
    key_b: str
    name_a: str
    name_b: str
    score: float
    reasons: list[str]
    signals: dict[str, float] = field(default_factory=dict)

    def as_dict(self, name_field: str = "sku") -> dict[str, Any]:
        return {f"{name_field}_a": self.name_a, f"{name_field}_b": self.name_b,
                "score": round(self.score, 4), "reasons": self.reasons}


def normalise_title(title: str) -> str:
    text = unicodedata.normalize("NFKC", title).lower()
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def title_similarity(a: str, b: str) -> float:
    from rapidfuzz import fuzz

    return float(fuzz.token_set_ratio(normalise_title(a), normalise_title(b))) / 100.0


def photo_hash(spec: IndexSpec, obj: Any) -> Any:
    """The pHash of the object's first image (``None`` without one, or when it cannot be read)."""
    import imagehash
    from PIL import Image

    sources = spec.get_images(obj)
    if not sources:
        return None
    try:
        with sources[0].open() as fh, Image.open(fh) as image:
            image.draft("L", (256, 256))  # JPEG: decode at reduced scale, the hash is 32x32 anyway
            return imagehash.phash(image.convert("L"))
    except Exception as exc:  # a broken photo must not stop a scan of the whole catalog
        logger.warning("no photo hash for %s %s: %s", spec.label, obj.pk, exc)
        return None


def judge(image_cosine: float | None, hash_bits: int | None, title: float) -> tuple[float, list[str]]:
    """Score and reasons of one pair from its three signals (``None``: no photo to compare)."""
    reasons = []
    visual = 0.0
    if hash_bits is not None:
        visual = max(visual, 1.0 - hash_bits / 32.0)
        if hash_bits <= SAME_PHOTO_BITS:
            reasons.append(f"same photo (perceptual hash {hash_bits}/64 bits apart)")
    if image_cosine is not None:
        visual = max(visual, image_cosine)
        if image_cosine >= TIGHT_COSINE:
            reasons.append(f"near-identical photo (image cosine {image_cosine:.3f})")
    if title >= CLOSE_TITLE:
        reasons.append(f"near-identical title ({title:.0%} alike)")
    return min(visual, title), reasons


class _Hashes:
    """Photo hashes computed once per object during a scan."""

    def __init__(self, spec: IndexSpec) -> None:
        self.spec = spec
        self.by_key: dict[str, Any] = {}

    def __call__(self, obj: Any) -> Any:
        key = self.spec.object_key(obj.pk)
        if key not in self.by_key:
            self.by_key[key] = photo_hash(self.spec, obj)
        return self.by_key[key]


def candidate_pairs(spec: IndexSpec, index: VectorIndex, keys: list[str], *, neighbours: int = NEIGHBOURS,
                    ) -> dict[tuple[str, str], float | None]:
    """``(key_a, key_b)`` (a < b) → image cosine (``None`` when unknown) for the nearest
    neighbours of ``keys`` in each modality."""
    points = index.retrieve([spec.point_id(k) for k in keys], with_vectors=True)
    pairs: dict[tuple[str, str], float | None] = {}
    for key in keys:
        point = points.get(spec.point_id(key))
        if point is None:
            continue
        found: dict[str, float | None] = {}
        for modality in ("image", "text"):
            vector = point.vectors.get(modality)
            if vector is None:
                continue
            for hit in index.query(modality, vector, limit=neighbours + 1,
                                   filter=SearchFilter(exclude_ids=frozenset({point.id}))):
                other = str(hit.payload.get("pk"))
                if modality == "image":
                    found[other] = hit.score
                else:
                    found.setdefault(other, None)
        missing = frozenset(spec.point_id(o) for o, cos in found.items() if cos is None)
        if missing and "image" in point.vectors:
            for hit in index.query("image", point.vectors["image"], limit=len(missing),
                                   filter=SearchFilter(ids=missing)):
                found[str(hit.payload.get("pk"))] = hit.score
        for other, cosine in found.items():
            pair = (key, other) if key < other else (other, key)
            if pairs.get(pair) is None:
                pairs[pair] = cosine
    return pairs


def find_duplicates(
    model: Any = None, *, threshold: float = DEFAULT_THRESHOLD, neighbours: int = NEIGHBOURS,
    index: VectorIndex | None = None, progress: Callable[[int], None] | None = None,
) -> list[DuplicatePair]:
    """Every pair of the spec's indexed objects scoring ``threshold`` or more, best first."""
    spec = registry.get_spec(model)
    index = index or registry.vector_index(spec)
    queryset = spec.get_queryset()
    pairs: dict[tuple[str, str], float | None] = {}
    for batch in iter_batches(queryset, 256):
        keys = [spec.object_key(pk) for pk in batch]
        for pair, cosine in candidate_pairs(spec, index, keys, neighbours=neighbours).items():
            if pairs.get(pair) is None:
                pairs[pair] = cosine
        if progress:
            progress(len(batch))
    return judge_pairs(spec, pairs, threshold=threshold)


def judge_pairs(spec: IndexSpec, pairs: dict[tuple[str, str], float | None], *,
                threshold: float) -> list[DuplicatePair]:
    """Score candidate pairs (title first: it is cheap, and no photo makes up for a title that
    differs), best first; those under ``threshold`` are left out."""
    keys = sorted({k for pair in pairs for k in pair})
    objects = _load(spec, keys)
    hashes = _Hashes(spec)
    out = []
    for (a, b), cosine in pairs.items():
        obj_a, obj_b = objects.get(a), objects.get(b)
        if obj_a is None or obj_b is None:
            continue
        title = title_similarity(spec.get_title(obj_a), spec.get_title(obj_b))
        if title < threshold:
            continue
        hash_a, hash_b = hashes(obj_a), hashes(obj_b)
        bits = int(hash_a - hash_b) if hash_a is not None and hash_b is not None else None
        score, reasons = judge(cosine, bits, title)
        if score >= threshold:
            out.append(DuplicatePair(a, b, spec.lookup_value(obj_a), spec.lookup_value(obj_b), score, reasons,
                                     {"image_cosine": cosine if cosine is not None else float("nan"),
                                      "hash_bits": float(bits) if bits is not None else float("nan"),
                                      "title": title}))
    out.sort(key=lambda p: (-p.score, p.key_a, p.key_b))
    return out


def _load(spec: IndexSpec, keys: Iterable[str]) -> dict[str, Any]:
    pks = [spec.to_pk(k) for k in keys]
    out: dict[str, Any] = {}
    for start in range(0, len(pks), 500):
        for pk, obj in spec.get_queryset().in_bulk(pks[start : start + 500]).items():
            out[spec.object_key(pk)] = obj
    return out
