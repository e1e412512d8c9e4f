"""The frozen-feature cache: each object's base image and text vectors, encoded once.

Training runs many epochs over the catalog; the frozen encoders (EfficientNet, MiniLM) are the
expensive part, so their outputs are cached on disk, one file per spec, modality and *base*
model version, keyed by the content hash the indexer uses (``text_hash`` / ``blob_hash``). A
changed title or photo misses the cache and is encoded again; a new base model starts a new file.

A miss is first looked up in the live index: when the index holds vectors of the same content
made by the same base model (no adapter active), they are the features, and nothing is encoded.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..backlog import iter_batches
from ..conf import get_settings
from ..encoders.base import l2_normalise
from ..exceptions import EncodingError
from ..indexing import blob_hash, read_images
from ..specs import IndexSpec, text_hash

logger = logging.getLogger(__name__)
MODALITIES = ("image", "text")


@dataclass
class CatalogFeatures:
    """Base vectors of every object of one spec; ``present[m]`` False where it has no m."""

    keys: list[str]
    texts: list[str]
    vectors: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    versions: dict[str, str]

    def __len__(self) -> int:
        return len(self.keys)

    def paired(self) -> np.ndarray:
        """Positions with both an image and a text: the training pairs."""
        return np.flatnonzero(self.present["image"] & self.present["text"])


def cache_dir() -> Path:
    """Next to the embedded index's folder (``SIMILARITY["INDEX"]["PATH"]``)."""
    return Path(get_settings().index.path).parent / "similarity-features"


def _cache_file(spec: IndexSpec, modality: str, version: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{spec.label}-{modality}-{version}")
    return cache_dir() / f"{safe}.npz"


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return dict(zip(data["hashes"].tolist(), data["vectors"], strict=True))


def _save(path: Path, cache: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    hashes = np.array(list(cache), dtype=str)
    vectors = np.stack(list(cache.values())) if cache else np.zeros((0, 0), np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, hashes=hashes, vectors=vectors.astype(np.float32))
    tmp.replace(path)


def catalog_features(
    model: Any = None, *, batch_size: int = 64, progress: Callable[[int], None] | None = None,
) -> CatalogFeatures:
    """Base image and text vectors of every object the spec indexes (cache, index, then encode)."""
    spec = registry.get_spec(model)
    conf = get_settings()
    encoders = {"text": registry.base_text_encoder(), "image": registry.base_image_encoder()}
    versions = {m: encoders[m].version for m in MODALITIES}
    caches = {m: _load(_cache_file(spec, m, versions[m])) for m in MODALITIES}
    before = {m: len(caches[m]) for m in MODALITIES}
    keys: list[str] = []
    texts: list[str] = []
    hashes: dict[str, list[str]] = {"text": [], "image": []}
    queryset = spec.get_queryset()
    for batch in iter_batches(queryset, batch_size):
        objects = [o for o in queryset.filter(pk__in=batch).order_by("pk") if spec.should_index(o)]
        todo: dict[str, list[tuple[str, Any]]] = {"text": [], "image": []}
        for obj in objects:
            key = spec.object_key(obj.pk)
            text = spec.get_text(obj)
            blobs, _errors = read_images(spec, obj, conf.max_images)
            th, ih = (text_hash(text) if text else ""), (blob_hash(blobs) if blobs else "")
            keys.append(key)
            texts.append(text)
            hashes["text"].append(th)
            hashes["image"].append(ih)
            if th and th not in caches["text"]:
                todo["text"].append((th, (key, text)))
            if ih and ih not in caches["image"]:
                todo["image"].append((ih, (key, blobs)))
        _from_index(spec, todo, caches, versions)
        _encode(encoders, todo, caches, conf.max_image_pixels)
        if progress:
            progress(len(objects))
    for m in MODALITIES:
        if len(caches[m]) != before[m]:
            _save(_cache_file(spec, m, versions[m]), caches[m])
    vectors, present = {}, {}
    for m in MODALITIES:
        have = np.array([bool(h) and h in caches[m] for h in hashes[m]], dtype=bool)
        dim = encoders[m].dim
        matrix = np.zeros((len(keys), dim), dtype=np.float32)
        for i, h in enumerate(hashes[m]):
            if have[i]:
                matrix[i] = caches[m][h]
        vectors[m], present[m] = matrix, have
    return CatalogFeatures(keys=keys, texts=texts, vectors=vectors, present=present, versions=versions)


@dataclass
class TextViews:
    """Frozen vectors of each object's texts: ``vectors[r]`` describes object ``owner[r]`` (its
    position in :class:`CatalogFeatures`). The indexed text is always one of the views."""

    vectors: np.ndarray
    owner: np.ndarray

    def __len__(self) -> int:
        return len(self.owner)


def text_views(
    features: CatalogFeatures, model: Any = None, *, batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> TextViews:
    """Each object's indexed text and its :meth:`~similarity.specs.IndexSpec.get_text_views`,
    through the same text cache (keyed by content hash), so a view is encoded once."""
    spec = registry.get_spec(model)
    encoder = registry.base_text_encoder()
    path = _cache_file(spec, "text", encoder.version)
    cache = _load(path)
    before = len(cache)
    position = {key: i for i, key in enumerate(features.keys)}
    rows: list[tuple[int, str]] = []
    queryset = spec.get_queryset()
    for batch in iter_batches(queryset, batch_size):
        objects = [o for o in queryset.filter(pk__in=batch).order_by("pk") if spec.should_index(o)]
        for obj in objects:
            pos = position.get(spec.object_key(obj.pk))
            if pos is None:
                continue
            seen = set()
            for view in [features.texts[pos], *spec.get_text_views(obj)]:
                view = " ".join((view or "").split())
                if view and view not in seen:
                    seen.add(view)
                    rows.append((pos, view))
        if progress:
            progress(len(objects))
    hashes = [text_hash(view) for _pos, view in rows]
    missing = sorted({h: view for h, (_pos, view) in zip(hashes, rows, strict=True) if h not in cache}.items())
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        for (h, _view), vector in zip(chunk, encoder.encode([view for _h, view in chunk]), strict=True):
            cache[h] = vector
    if len(cache) != before:
        _save(path, cache)
    vectors = np.stack([cache[h] for h in hashes]) if rows else np.zeros((0, encoder.dim), np.float32)
    return TextViews(vectors=vectors.astype(np.float32), owner=np.array([pos for pos, _v in rows], dtype=np.int64))


def _from_index(
    spec: IndexSpec, todo: dict[str, list[tuple[str, Any]]], caches: dict[str, dict[str, np.ndarray]],
    versions: dict[str, str],
) -> None:
    """Take the vectors the live index already holds for this content and base model."""
    wanted = {payload[0] for m in MODALITIES for _h, payload in todo[m]}
    if not wanted:
        return
    try:
        stored = registry.vector_index(spec).retrieve([spec.point_id(k) for k in wanted], with_vectors=True)
    except Exception:  # noqa: BLE001 - an unavailable index only means encoding everything
        logger.info("feature cache: the index is not readable; encoding")
        return
    for m in MODALITIES:
        hash_field = "text_hash" if m == "text" else "image_hash"
        left = []
        for h, payload in todo[m]:
            point = stored.get(spec.point_id(payload[0]))
            if (point is not None and m in point.vectors and point.payload.get(hash_field) == h
                    and (point.payload.get("model_versions") or {}).get(m) == versions[m]):
                caches[m][h] = np.asarray(point.vectors[m], dtype=np.float32)
            else:
                left.append((h, payload))
        todo[m] = left


def _encode(
    encoders: dict[str, Any], todo: dict[str, list[tuple[str, Any]]], caches: dict[str, dict[str, np.ndarray]],
    max_pixels: int,
) -> None:
    if todo["text"]:
        matrix = encoders["text"].encode([payload[1] for _h, payload in todo["text"]])
        for (h, _payload), vector in zip(todo["text"], matrix, strict=True):
            caches["text"][h] = vector
    if todo["image"]:
        rows = [(h, blobs) for h, (_key, blobs) in todo["image"]]
        for h, vector in zip([h for h, _b in rows], encode_images(encoders["image"], [b for _h, b in rows], max_pixels),
                             strict=True):
            if vector is not None:
                caches["image"][h] = vector


def encode_images(
    encoder: Any, objects: list[list[tuple[str, bytes]]], max_pixels: int,
) -> list[np.ndarray | None]:
    """The indexer's rule per object: the mean of its images' vectors, normalised again (one
    batch through the model for all of them); None where no image decodes."""
    from ..encoders.image_decoding import open_image

    owners, tensors = [], []
    for pos, blobs in enumerate(objects):
        for name, data in blobs:
            try:
                tensors.append(encoder.preprocess(open_image(io.BytesIO(data), name=name, max_pixels=max_pixels)))
                owners.append(pos)
            except EncodingError:
                continue
    out: list[np.ndarray | None] = [None] * len(objects)
    if not tensors:
        return out
    matrix = encoder.encode_tensors(tensors)
    for pos in set(owners):
        rows = matrix[[i for i, o in enumerate(owners) if o == pos]]
        out[pos] = l2_normalise(rows.mean(axis=0, keepdims=True))[0]
    return out
