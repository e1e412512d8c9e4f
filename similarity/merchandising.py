"""Merchandising: staff overrule the model. Pins, blocks and rules, applied in one place.

:func:`apply` is called once, at the end of :func:`~similarity.query.find_similar`, so every
widget, template tag, the admin panel and API callers see the same list; the storefront cache
(:func:`~similarity.pages.similar_for_page`) keys its entries with :func:`version`, which every
save or delete of a pin, block or rule bumps, so a change shows at once. Decisions are stored
in the database by object key (``similarity.staff_models``), so they survive reindexing.

Order: blocks and ``exclude_category`` rules drop hits (refilled from further down the ranking
through ``more``), ``boost`` rules add to scores and re-sort, then pins take their positions.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import CharField, F, FloatField, IntegerField, Value
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .results import SimilarHit
from .specs import IndexSpec
from .staff_models import Block, MerchandisingRule, Pin

logger = logging.getLogger(__name__)

VERSION_KEY = "similarity:merchandising:version"


# ---------------------------------------------------------------------------------------------
# Cache version: part of every cached similar list's key
# ---------------------------------------------------------------------------------------------
def version() -> str:
    """A token that changes whenever a pin, block or rule changes (one cache read)."""
    value = cache.get(VERSION_KEY)
    if value is None:
        value = uuid.uuid4().hex[:12]
        cache.add(VERSION_KEY, value, None)
        value = cache.get(VERSION_KEY) or value
    return str(value)


def bump_version() -> None:
    cache.set(VERSION_KEY, uuid.uuid4().hex[:12], None)


@receiver([post_save, post_delete], sender=Pin, dispatch_uid="similarity.merch.pin")
@receiver([post_save, post_delete], sender=Block, dispatch_uid="similarity.merch.block")
@receiver([post_save, post_delete], sender=MerchandisingRule, dispatch_uid="similarity.merch.rule")
def _changed(**_: Any) -> None:
    # after commit: a process that reloads the rules under the new version must see the change
    transaction.on_commit(bump_version)


# ---------------------------------------------------------------------------------------------
# The one place rules are applied
# ---------------------------------------------------------------------------------------------
def apply(
    obj: Any, spec: IndexSpec, hits: list[SimilarHit], *, limit: int, filters: dict[str, Any] | None = None,
    more: Callable[[int], list[SimilarHit]] | None = None,
) -> list[SimilarHit]:
    """``hits`` (best first) as staff want them shown for ``obj``.

    ``more(n)``: the first ``n`` unmerchandised hits, asked once when blocks or exclusions left
    fewer than ``limit``. Pinned objects are loaded with the spec's queryset and ``filters``
    (a pinned product that went out of stock is not shown under ``in_stock=True``).
    The rules, pins and blocks are read once per :func:`version` and kept in the process; only
    pinned objects are loaded (one query, with the spec's queryset).
    """
    key = spec.object_key(obj.pk)
    rules, decisions = _state(spec.label)
    pins, blocked = decisions.get(key, ([], set()))
    if not (pins or blocked or rules):
        return hits
    excluded = _excluded_categories(obj, spec, rules)
    pinned_keys = {target for target, _ in pins}

    def shown(hit: SimilarHit) -> bool:
        hit_key = spec.object_key(hit.pk)
        if hit_key in blocked or hit_key in pinned_keys:
            return False
        return not (excluded and excluded & set(spec.get_taxonomy(hit.object)))

    kept = [hit for hit in hits if shown(hit)]
    if len(kept) < len(hits) and len(kept) < limit and more is not None:
        seen = {hit.pk for hit in kept}
        extra = more(limit + len(blocked) + len(pinned_keys) + (len(hits) - len(kept)))
        kept += [hit for hit in extra if hit.pk not in seen and shown(hit)]
    kept = _boost(spec, kept, [r for r in rules if r.kind == MerchandisingRule.Kind.BOOST])
    if pins:
        kept = _place_pins(spec, kept, pins, blocked, filters or {}, obj)
    return kept[:limit]


Decisions = dict[str, tuple[list[tuple[str, int]], set[str]]]
#: label -> (version, active rules, source key -> (pins, blocked keys)); pins are few per shop
_STATE: dict[str, tuple[str, list[MerchandisingRule], Decisions]] = {}


def _state(label: str) -> tuple[list[MerchandisingRule], Decisions]:
    """The rules and every pin and block of a model, read again (one query) only when
    :func:`version` moves."""
    current = version()
    cached = _STATE.get(label)
    if cached is None or cached[0] != current:
        rules: list[MerchandisingRule] = []
        decisions: Decisions = {}
        for kind, source, target, position, field, value, other, amount in _rows(label):
            if kind == "pin":
                decisions.setdefault(source, ([], set()))[0].append((target, int(position)))
            elif kind == "block":
                decisions.setdefault(source, ([], set()))[1].add(target)
            else:
                rules.append(MerchandisingRule(model_label=label, kind=kind, field=field, value=value, other=other,
                                               amount=amount))
        for pins, _blocked in decisions.values():
            pins.sort(key=lambda row: row[1])
        cached = _STATE[label] = (current, rules, decisions)
    return cached[1], cached[2]


def _rows(label: str) -> list[tuple[Any, ...]]:
    """Pins, blocks and active rules of ``label`` in one UNION ALL query (the same columns)."""

    def text(value: str) -> Value:
        return Value(value, output_field=CharField())

    number = Value(0, output_field=IntegerField())
    zero = Value(0.0, output_field=FloatField())
    columns = ("k", "s", "t", "p", "f", "v", "o", "a")
    pins = Pin.objects.filter(model_label=label).order_by().annotate(
        k=text("pin"), s=F("source"), t=F("target"), p=F("position"), f=text(""), v=text(""), o=text(""), a=zero,
    ).values_list(*columns)
    blocks = Block.objects.filter(model_label=label).order_by().annotate(
        k=text("block"), s=F("source"), t=F("target"), p=number, f=text(""), v=text(""), o=text(""), a=zero,
    ).values_list(*columns)
    rules = MerchandisingRule.objects.filter(model_label=label, active=True).order_by().annotate(
        k=F("kind"), s=text(""), t=text(""), p=number, f=F("field"), v=F("value"), o=F("other"), a=F("amount"),
    ).values_list(*columns)
    return list(pins.union(blocks, rules, all=True))


def _excluded_categories(obj: Any, spec: IndexSpec, rules: list[MerchandisingRule]) -> set[str]:
    """Category names never shown next to ``obj`` (rules are symmetric)."""
    excludes = [rule for rule in rules if rule.kind == MerchandisingRule.Kind.EXCLUDE_CATEGORY]
    if not excludes:
        return set()
    mine = set(spec.get_taxonomy(obj))
    out: set[str] = set()
    for rule in excludes:
        if rule.value in mine:
            out.add(rule.other)
        if rule.other in mine:
            out.add(rule.value)
    return out


def _boost(spec: IndexSpec, hits: list[SimilarHit], rules: list[MerchandisingRule]) -> list[SimilarHit]:
    if not rules:
        return hits
    boosted = []
    for hit in hits:
        payload = spec.get_payload(hit.object)
        extra = 0.0
        for rule in rules:
            value = payload.get(rule.field)
            if rule.value == "":
                try:
                    extra += rule.amount * float(value)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    continue
            elif _same(value, rule.value):
                extra += rule.amount
        boosted.append(SimilarHit(hit.object, hit.pk, hit.score + extra, hit.scores) if extra else hit)
    return sorted(boosted, key=lambda hit: hit.score, reverse=True)


def _same(value: Any, wanted: str) -> bool:
    """A payload value against a rule's text: booleans as true/false/1/0/yes/no."""
    if isinstance(value, bool):
        return wanted.strip().lower() in (("true", "1", "yes") if value else ("false", "0", "no"))
    if isinstance(value, list | tuple):
        return any(_same(v, wanted) for v in value)
    return str(value) == wanted


def _place_pins(
    spec: IndexSpec, hits: list[SimilarHit], pins: list[tuple[str, int]], blocked: set[str],
    filters: dict[str, Any], obj: Any,
) -> list[SimilarHit]:
    keys = [target for target, _ in pins if target not in blocked and target != spec.object_key(obj.pk)]
    objects = spec.filter_queryset(spec.get_queryset(), filters).in_bulk([spec.to_pk(k) for k in keys])
    top = hits[0].score if hits else 1.0
    out = list(hits)
    for target, position in sorted(pins, key=lambda row: row[1]):
        pk = spec.to_pk(target)
        if pk in objects:
            out.insert(min(position, len(out)), SimilarHit(objects[pk], pk, top, {}))
    return out


# ---------------------------------------------------------------------------------------------
# What the admin writes
# ---------------------------------------------------------------------------------------------
def pin(spec: IndexSpec, source_pk: Any, target_pk: Any, position: int | None = None) -> Pin:
    """Pin ``target`` in ``source``'s list (at the end of the pins when no position); unblocks it."""
    source, target = spec.object_key(source_pk), spec.object_key(target_pk)
    Block.objects.filter(model_label=spec.label, source=source, target=target).delete()
    if position is None:
        position = Pin.objects.filter(model_label=spec.label, source=source).exclude(target=target).count()
    row, _ = Pin.objects.update_or_create(
        model_label=spec.label, source=source, target=target, defaults={"position": max(0, int(position))}
    )
    return row


def block(spec: IndexSpec, source_pk: Any, target_pk: Any) -> Block:
    """Never show ``target`` in ``source``'s list; unpins it."""
    source, target = spec.object_key(source_pk), spec.object_key(target_pk)
    Pin.objects.filter(model_label=spec.label, source=source, target=target).delete()
    row, _ = Block.objects.get_or_create(model_label=spec.label, source=source, target=target)
    return row


def clear(spec: IndexSpec, source_pk: Any, target_pk: Any) -> None:
    """Forget any pin or block of ``target`` in ``source``'s list."""
    source, target = spec.object_key(source_pk), spec.object_key(target_pk)
    Pin.objects.filter(model_label=spec.label, source=source, target=target).delete()
    Block.objects.filter(model_label=spec.label, source=source, target=target).delete()


def decisions_for(spec: IndexSpec, source_pk: Any) -> dict[str, Any]:
    """The pinned (in order) and blocked objects of ``source``, for the admin panel."""
    source = spec.object_key(source_pk)
    pins = list(Pin.objects.filter(model_label=spec.label, source=source))
    blocks = list(Block.objects.filter(model_label=spec.label, source=source))
    targets = [r.target for r in pins] + [r.target for r in blocks]
    objects = spec.get_queryset().in_bulk([spec.to_pk(t) for t in targets])
    return {
        "pinned": [objects[spec.to_pk(r.target)] for r in pins if spec.to_pk(r.target) in objects],
        "blocked": [objects[spec.to_pk(r.target)] for r in blocks if spec.to_pk(r.target) in objects],
    }
