"""The live adapter applied at encode time: the registry's encoders, wrapped.

``registry.text_encoder()`` / ``image_encoder()`` return the plain encoders wrapped by
:func:`wrap`: when an :class:`~.models.AdapterArtifact` is active, every vector goes through its
head, and the encoder's ``version`` becomes ``<base version>+<artifact version>``, so
``IndexState.model_version``, the points' ``model_versions`` and ``reconcile`` all see which
artifact made a vector. :func:`using` pins an artifact (or none) for the current context: a
rebuild fills the new generation with the candidate while the live one keeps the old.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .heads import Heads

logger = logging.getLogger(__name__)

#: how long a process trusts its last look at which artifact is active (other processes switch it)
ACTIVE_TTL = 5.0
_UNSET = object()
_pinned: contextvars.ContextVar[Any] = contextvars.ContextVar("similarity_adapter", default=_UNSET)
_lock = threading.Lock()
_active: dict[str, Any] = {"checked": -1e9, "version": None}
_heads: dict[str, Heads] = {}
_fusion: dict[str, dict[str, float]] = {}
_wrapped: dict[tuple[str, str, int], Any] = {}


class AdaptedEncoder:
    """A base encoder followed by one artifact's head; everything else is the base's."""

    def __init__(self, base: Any, modality: str, version: str, heads: Heads) -> None:
        self.base = base
        self.modality = modality
        self.artifact_version = version
        self.heads = heads

    def __getattr__(self, name: str) -> Any:  # preprocess, micro_batch, device_name, model ...
        return getattr(self.base, name)

    @property
    def name(self) -> str:
        return str(self.base.name)

    @property
    def dim(self) -> int:
        return self.heads.out_dim(self.modality)

    @property
    def version(self) -> str:
        return f"{self.base.version}+{self.artifact_version}"

    def encode(self, batch: list[Any]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.heads.apply(self.modality, self.base.encode(batch))

    def encode_tensors(self, tensors: Any) -> np.ndarray:
        return self.heads.apply(self.modality, self.base.encode_tensors(tensors))


def _load(version: str) -> Heads | None:
    if version not in _heads:
        from .models import AdapterArtifact

        row = AdapterArtifact.objects.filter(version=version).only("weights", "meta").first()
        if row is None:
            return None
        _heads[version] = Heads.from_bytes(bytes(row.weights))
        _fusion[version] = dict(row.meta.get("fusion_weights") or {})
    return _heads[version]


def active_version() -> str | None:
    """The active artifact's version (looked up at most every ``ACTIVE_TTL`` seconds)."""
    pinned = _pinned.get()
    if pinned is not _UNSET:
        return pinned  # type: ignore[no-any-return]
    now = time.monotonic()
    with _lock:
        if now - _active["checked"] > ACTIVE_TTL:
            from django.db import transaction

            from .models import AdapterArtifact

            try:
                with transaction.atomic(using=AdapterArtifact.objects.db):  # a savepoint: a failure
                    version = AdapterArtifact.objects.filter(  # leaves the caller's transaction usable
                        active=True).values_list("version", flat=True).first()
            except Exception:  # noqa: BLE001 - not migrated, no database here: the plain encoders
                return None
            _active["version"], _active["checked"] = version, now
        return _active["version"]  # type: ignore[no-any-return]


def active_fusion_weights() -> dict[str, float] | None:
    """The label-free fusion weights measured when the live adapter was trained (None: none)."""
    version = active_version()
    if not version or _load(version) is None:
        return None
    return _fusion.get(version) or None


def forget() -> None:
    """Look the active artifact up again on next use (after this process switched it)."""
    with _lock:
        _active["checked"] = -1e9


@contextmanager
def using(version: str | None) -> Iterator[None]:
    """Encode with artifact ``version`` (None: the plain encoders) inside this block only."""
    token = _pinned.set(version)
    try:
        yield
    finally:
        _pinned.reset(token)


def wrap(modality: str, base: Any) -> Any:
    """``base`` as the active artifact (or the pinned one) makes it encode."""
    version = active_version()
    if not version:
        return base
    key = (modality, version, id(base))
    if key not in _wrapped:
        heads = _load(version)
        if heads is None:
            logger.warning("adapter %s is not in the database; encoding without it", version)
            return base
        # a text-only adapter (``similarity_train --text``) leaves the photos to the base model
        _wrapped[key] = AdaptedEncoder(base, modality, version, heads) if modality in heads.weights else base
    return _wrapped[key]


def active_is_joint() -> bool:
    """True when the live adapter maps photos into the text space (image and text heads), so
    typed words can be matched against the image vectors; False with none or a text-only one."""
    version = active_version()
    heads = _load(version) if version else None
    return heads is not None and {"image", "text"} <= set(heads.weights)
