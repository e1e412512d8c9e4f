"""Declarative description of what to index for a model (like haystack's ``SearchIndex``).

A shop with its own model writes a subclass of :class:`IndexSpec` and lists it in
``SIMILARITY["SPECS"]``. The spec owns the model's vocabulary: the text and images to encode,
the payload and the filters callers may ask for by name, the fallback shown while the index
cannot answer, the thumbnail and price of a card, and how to look an object up from the
command line. Nothing else in the app names a field of the model.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from django.apps import apps
from django.db import models

from .exceptions import SimilarityError

# Fixed namespace so that point ids are stable across machines and rebuilds.
POINT_NAMESPACE = uuid.UUID("7f1d9a52-63b8-4c57-9b0b-2f0f4e1f6a11")


class PayloadType:
    KEYWORD = "keyword"
    INTEGER = "integer"
    FLOAT = "float"
    BOOL = "bool"


#: payload fields every point carries, whatever the spec adds (keys of any primary key type)
BASE_PAYLOAD_SCHEMA = {"pk": PayloadType.KEYWORD, "group": PayloadType.KEYWORD, "model": PayloadType.KEYWORD}


class UnknownFilter(SimilarityError, TypeError):
    """A caller asked for a filter the spec does not declare."""


@dataclass(frozen=True)
class Filter:
    """A filter callers ask for by name: ``find_similar(obj, in_stock=True)``.

    ``field`` is the payload field it matches and ``type`` its index type. A value of ``None``,
    ``False`` or ``""`` means "no filter"; ``True`` on a ``bool`` field means "must be true"; a
    list means "any of these". With ``relative_to`` (a payload field holding the object's path,
    root first), the filter compares with the query object: ``True`` = the same last element,
    ``N`` = the same element at depth N (1 = the root), like "the same category".
    """

    field: str
    type: str = PayloadType.KEYWORD
    relative_to: str | None = None

    def condition(self, name: str, value: Any, payload: dict[str, Any] | None) -> tuple[str, Any] | None:
        """``("match" | "match_any", value)`` for the store, or ``None`` for no filter."""
        if value is None or value is False or value == "":
            return None
        if self.relative_to is not None:
            if payload is None:
                raise UnknownFilter(f"the filter {name!r} compares with an object; it needs one")
            path = payload.get(self.relative_to) or []
            if not path:
                return None
            try:
                level = len(path) if value is True else max(1, int(value))
            except (TypeError, ValueError):
                raise UnknownFilter(f"the filter {name!r} takes True or a depth (1, 2, ...), not {value!r}") from None
            return "match", path[min(level, len(path)) - 1]
        if self.type == PayloadType.BOOL:
            return "match", bool(value)
        if isinstance(value, list | tuple | set | frozenset):
            return "match_any", list(value)
        return "match", value


@dataclass(frozen=True)
class ImageSource:
    """One image of an object: a name for error messages and a way to open its bytes."""

    name: str
    open: Callable[[], Any]


@dataclass(frozen=True)
class Watch:
    """Another model whose changes make some indexed objects stale.

    ``to_ids(instance)``: the primary keys of the indexed objects affected by a save of
    ``instance``. ``on_delete(instance)``: those affected when it is deleted, asked *before* the
    delete (default: ``to_ids``). ``bulk(queryset)``: those affected by a bulk write to the rows
    of ``queryset`` (``QuerySet.update``, ``bulk_create``, ``mark_changed``; default: ``to_ids``
    of each row).
    """

    model: str
    to_ids: Callable[[Any], Iterable[Any]]
    on_delete: Callable[[Any], Iterable[Any]] | None = None
    bulk: Callable[[Any], Iterable[Any]] | None = None

    def ids_before_delete(self, instance: Any) -> Iterable[Any]:
        return (self.on_delete or self.to_ids)(instance)

    def ids_for_queryset(self, queryset: Any) -> Iterable[Any]:
        if self.bulk is not None:
            return self.bulk(queryset)
        return [pk for instance in queryset for pk in self.to_ids(instance)]


class IndexSpec:
    """What to index for one model. Subclass, set ``model`` and override the ``get_*``."""

    model: ClassVar[str]  # "app_label.ModelName"
    #: filters callers may pass by name to find_similar, the tags and the searches
    filters: ClassVar[dict[str, Filter]] = {}
    #: further payload fields to index (the filters' fields are indexed anyway)
    payload_schema: ClassVar[dict[str, str]] = {}
    #: other models whose saves/deletes make objects of ``model`` stale
    watches: ClassVar[Sequence[Watch]] = ()
    #: the field `manage.py similar VALUE` and evaluation files name objects by
    lookup_field: ClassVar[str] = "pk"
    #: True when get_text includes the get_taxonomy names (evaluation by taxonomy then warns)
    text_includes_taxonomy: ClassVar[bool] = False
    #: the collection (Edge shard) name; default ``<SIMILARITY INDEX COLLECTION>_<app>_<model>``
    collection: ClassVar[str] = ""

    @property
    def label(self) -> str:
        return self.model_class._meta.label_lower

    @property
    def model_class(self) -> type[models.Model]:
        return apps.get_model(self.model)

    def collection_name(self, prefix: str) -> str:
        return self.collection or f"{prefix}_{self.label.replace('.', '_')}"

    def full_payload_schema(self) -> dict[str, str]:
        return {**BASE_PAYLOAD_SCHEMA, **{f.field: f.type for f in self.filters.values()}, **self.payload_schema}

    # -- what to encode ---------------------------------------------------------------------
    def get_queryset(self) -> models.QuerySet[Any]:
        return self.model_class._default_manager.all()

    def get_text(self, obj: Any) -> str:
        raise NotImplementedError

    def get_images(self, obj: Any) -> list[ImageSource]:
        return []

    def get_text_views(self, obj: Any) -> list[str]:
        """Other texts that describe ``obj`` in other words than :meth:`get_text` (its title, the
        head of its description): positives for training a text head on the catalog alone
        (``similarity_train --text``). Only the shop's own data; [] leaves dropout as the only view."""
        return [self.get_title(obj)]

    def get_payload(self, obj: Any) -> dict[str, Any]:
        return {}

    def get_group(self, obj: Any) -> str:
        """Objects in one group are variants of each other (one shown per group)."""
        return self.object_key(obj.pk)

    def should_index(self, obj: Any) -> bool:
        return True

    # -- what pages show --------------------------------------------------------------------
    def filter_queryset(self, queryset: models.QuerySet[Any], filters: dict[str, Any]) -> models.QuerySet[Any]:
        """The caller's filters applied in the database as well, to the objects a result is loaded
        from: a page served from the cache (or an index a few seconds behind) never shows, say, a
        product that went out of stock since. Default: no database filtering."""
        return queryset

    def get_fallback_queryset(self, obj: Any, filters: dict[str, Any]) -> models.QuerySet[Any] | None:
        """Objects shown instead of similar ones while the index cannot answer (``None``: none).
        ``filters`` are the caller's filter options, for the spec to honour."""
        return None

    #: the widget's heading while it shows the fallback
    fallback_title: ClassVar[str] = "You may also like"

    def get_thumbnail(self, obj: Any) -> Any:
        """The ``FieldFile`` a card's thumbnail is made from, or ``None``."""
        return None

    def get_title(self, obj: Any) -> str:
        return str(obj)

    def format_price(self, obj: Any) -> str:
        """The price as a card shows it ("" for none); or override ``similarity/widget.html``."""
        return ""

    def get_taxonomy(self, obj: Any) -> list[str]:
        """Category names from the root down, for evaluation by category ([] = none)."""
        return []

    # -- what staff tools write and explain (docs/staff-tools.md) ----------------------------
    #: payload fields two objects are said to share ("Same brand"), with the word shown for each
    shared_fields: ClassVar[dict[str, str]] = {}

    def apply_category(self, obj: Any, path: list[str]) -> None:
        """Give ``obj`` the category whose names from the root down are ``path`` (a suggestion
        staff accepted). Default: the spec cannot write categories."""
        raise NotImplementedError(f"{type(self).__name__} does not implement apply_category")

    def link_variants(self, parent: Any, variant: Any) -> None:
        """Make ``variant`` a variant of ``parent`` (two listings staff linked). Default: cannot."""
        raise NotImplementedError(f"{type(self).__name__} does not implement link_variants")

    def shared_attributes(self, a: Any, b: Any) -> list[str]:
        """What ``a`` and ``b`` have in common, in words ("Same brand"). Default: the
        ``shared_fields`` whose payload values are equal and not empty."""
        if not self.shared_fields:
            return []
        pa, pb = self.get_payload(a), self.get_payload(b)
        return [word for name, word in self.shared_fields.items() if pa.get(name) not in (None, "", [])
                and pa.get(name) == pb.get(name)]

    # -- identity ---------------------------------------------------------------------------
    def object_key(self, pk: Any) -> str:
        """The primary key as stored in index state rows and payloads: ``str(pk)``, UUIDs as
        32 hex digits (how SQLite and MySQL store them, and what PostgreSQL casts back)."""
        value = self.model_class._meta.pk.to_python(pk)
        return value.hex if isinstance(value, uuid.UUID) else str(value)

    def to_pk(self, key: Any) -> Any:
        """The primary key value of a stored key."""
        return self.model_class._meta.pk.to_python(key)

    def point_id(self, pk: Any) -> str:
        return str(uuid.uuid5(POINT_NAMESPACE, f"{self.label}:{self.object_key(pk)}"))

    def pks_of(self, rows: models.QuerySet[Any]) -> models.QuerySet[Any]:
        """A subquery of the primary keys that index state or outbox ``rows`` name, cast from
        the stored text key to the model's key type, for ``pk__in=`` on any database."""
        from django.db.models.functions import Cast

        pk = self.model_class._meta.pk
        kind = pk.get_internal_type()
        if kind in ("CharField", "TextField", "SlugField"):
            return rows.values("object_id")
        output: models.Field[Any, Any]
        if kind == "UUIDField":
            output = models.UUIDField()
        elif kind in ("AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField",
                      "SmallIntegerField", "PositiveIntegerField", "PositiveBigIntegerField"):
            output = models.BigIntegerField()
        else:
            output = pk.__class__()
        return rows.annotate(_pk=Cast("object_id", output_field=output)).values("_pk")

    def lookup(self, value: str) -> Any:
        """The object whose ``lookup_field`` is ``value`` (``DoesNotExist`` otherwise)."""
        return self.get_queryset().get(**{self.lookup_field: value})

    def lookup_value(self, obj: Any) -> str:
        return str(getattr(obj, self.lookup_field))


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
