"""Signal wiring: every save, delete and many-to-many change of an indexed model, and of the
models its spec watches, goes to :func:`similarity.changes.capture_changes`.

Connected in ``SimilarityConfig.ready()`` and again whenever ``SIMILARITY`` changes. Related rows
are looked at *before* they are deleted (``pre_delete``), because a delete that sets foreign keys
to NULL (``on_delete=SET_NULL``) updates the indexed rows without any signal of theirs.
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, router
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver

from . import registry
from .changes import capture_changes
from .exceptions import SimilarityError
from .specs import IndexSpec, Watch

logger = logging.getLogger(__name__)


def _on_indexed_save(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return  # fixture loading: the data is not final yet
    using = kwargs.get("using") or router.db_for_write(sender)
    capture_changes(sender._meta.label_lower, index_ids=[instance.pk], using=using)


def _on_indexed_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    using = kwargs.get("using") or router.db_for_write(sender)
    capture_changes(sender._meta.label_lower, remove_ids=[instance.pk], using=using)


def _watch_handler(spec: IndexSpec, watch: Watch, *, deleting: bool) -> Any:
    def handler(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
        if raw:
            return
        ids = list(watch.ids_before_delete(instance) if deleting else watch.to_ids(instance))
        if not deleting:
            ids += getattr(instance, "_similarity_before", {}).pop(id(watch), [])
        if ids:
            capture_changes(spec, index_ids=ids, using=kwargs.get("using") or DEFAULT_DB_ALIAS)

    return handler


def _watch_before_save(spec: IndexSpec, watch: Watch) -> Any:
    """A watched row about to be saved: the objects it affects *as stored* (an image moved to
    another product changes the old product too; ``post_save`` sees only the new one)."""

    def handler(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
        if raw or instance._state.adding or instance.pk is None:
            return
        stored = sender._default_manager.filter(pk=instance.pk).first()
        # Kept for post_save: queued now, autocommit would dispatch before the row is written.
        before = getattr(instance, "_similarity_before", {})
        before[id(watch)] = list(watch.to_ids(stored)) if stored is not None else []
        instance._similarity_before = before

    return handler


def _m2m_handler(spec: IndexSpec) -> Any:
    """A many-to-many field of the indexed model changed, from either side."""

    def handler(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any) -> None:
        using = kwargs.get("using") or DEFAULT_DB_ALIAS
        if not reverse:
            if action in ("post_add", "post_remove", "post_clear"):
                capture_changes(spec, index_ids=[instance.pk], using=using)
            return
        # The other side changed: pk_set names our objects (for a clear, look before it happens).
        if action in ("post_add", "post_remove") and pk_set:
            capture_changes(spec, index_ids=list(pk_set), using=using)
        elif action == "pre_clear":
            through = sender._meta
            ours = next(f for f in through.get_fields() if getattr(f, "related_model", None) is spec.model_class)
            theirs = next(f for f in through.get_fields()
                          if getattr(f, "related_model", None) is type(instance) and f is not ours)
            ids = list(sender.objects.filter(**{theirs.name: instance}).values_list(ours.attname, flat=True))
            if ids:
                capture_changes(spec, index_ids=ids, using=using)

    return handler


_connected: list[tuple[Any, Any, str]] = []


def _connect(signal: Any, handler: Any, sender: Any, uid: str) -> None:
    signal.connect(handler, sender=sender, dispatch_uid=uid, weak=False)
    _connected.append((signal, sender, uid))


def connect() -> None:
    """Connect the signals of every registered spec (idempotent)."""
    disconnect()
    for spec in registry.specs().values():
        model, label = spec.model_class, spec.label
        _connect(post_save, _on_indexed_save, model, f"similarity:{label}:save")
        _connect(post_delete, _on_indexed_delete, model, f"similarity:{label}:delete")
        for field in model._meta.many_to_many:
            through = field.remote_field.through
            _connect(m2m_changed, _m2m_handler(spec), through, f"similarity:{label}:m2m:{field.name}")
        for position, watch in enumerate(spec.watches):
            watched = apps.get_model(watch.model)
            _connect(pre_save, _watch_before_save(spec, watch), watched, f"similarity:{label}:watch{position}:presave")
            _connect(post_save, _watch_handler(spec, watch, deleting=False), watched,
                     f"similarity:{label}:watch{position}:save")
            _connect(pre_delete, _watch_handler(spec, watch, deleting=True), watched,
                     f"similarity:{label}:watch{position}:delete")


@receiver(setting_changed)
def _reconnect(*, setting: str, **kwargs: Any) -> None:
    """Follow a changed ``SPECS`` (tests, ``override_settings``): signals of exactly those models."""
    if setting == "SIMILARITY" and apps.ready:
        try:
            connect()
        except (ImportError, LookupError, SimilarityError) as exc:  # reported by the system checks
            disconnect()
            logger.warning("similarity signals not connected: %s", exc)


def disconnect() -> None:
    while _connected:
        signal, model, uid = _connected.pop()
        signal.disconnect(sender=model, dispatch_uid=uid)
