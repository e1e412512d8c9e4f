"""Declarative description of what to index for a model (like haystack's ``SearchIndex``).

A shop with its own product model writes a subclass of :class:`IndexSpec` and lists it in
``SIMILARITY["SPECS"]``; nothing else in the app knows about the model.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from django.apps import apps
from django.db import models

# Fixed namespace so that point ids are stable across machines and rebuilds.
POINT_NAMESPACE = uuid.UUID("7f1d9a52-63b8-4c57-9b0b-2f0f4e1f6a11")


class PayloadType:
    KEYWORD = "keyword"
    INTEGER = "integer"
    FLOAT = "float"
    BOOL = "bool"


@dataclass(frozen=True)
class ImageSource:
    """One image of an object: a name for error messages and a way to open its bytes."""

    name: str
    open: Callable[[], Any]


@dataclass(frozen=True)
class Watch:
    """Another model whose changes make some indexed objects stale.

    ``to_ids(instance)`` returns the primary keys of the indexed objects affected by a change
    of ``instance``.
    """

    model: str
    to_ids: Callable[[Any], Iterable[int]]


class IndexSpec:
    """What to index for one model. Subclass and set ``model`` and override the ``get_*``."""

    model: ClassVar[str]  # "app_label.ModelName"
    #: payload fields usable in filters, with their index type
    payload_schema: ClassVar[dict[str, str]] = {}
    #: other models whose saves/deletes make objects of ``model`` stale
    watches: ClassVar[Sequence[Watch]] = ()

    @property
    def label(self) -> str:
        return self.model_class._meta.label_lower

    @property
    def model_class(self) -> type[models.Model]:
        return apps.get_model(self.model)

    def get_queryset(self) -> models.QuerySet[Any]:
        return self.model_class._default_manager.all()

    def get_text(self, obj: Any) -> str:
        raise NotImplementedError

    def get_images(self, obj: Any) -> list[ImageSource]:
        return []

    def get_payload(self, obj: Any) -> dict[str, Any]:
        return {}

    def get_group(self, obj: Any) -> int:
        """Objects in one group are variants of each other (one shown per group)."""
        return int(obj.pk)

    def should_index(self, obj: Any) -> bool:
        return True

    # -- identity ---------------------------------------------------------------------------
    def point_id(self, pk: int | str) -> str:
        return str(uuid.uuid5(POINT_NAMESPACE, f"{self.label}:{pk}"))


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def truncate_words(text: str, limit: int) -> str:
    """Cut ``text`` at a word boundary before ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[: space if space > limit // 2 else limit]
