"""Merchandising: staff overrule the model. Pins, blocks and rules, applied in one place.

:func:`apply` is called once, at the end of :func:`~similarity.query.find_similar`, so every
widget, template tag, the admin panel and API callers see the same list; the storefront cache
(:func:`~similarity.pages.similar_for_page`) keys its entries with :func:`version`, which every
save or delete of a pin, block or rule changes, in the database and, with a shared cache, in the
cache, so a change shows on the next render in every process. Decisions are stored in the
database by object key (``similarity.staff_models``), so they survive reindexing.

Order: blocks and ``exclude_category`` rules drop hits (refilled from further down the ranking
through ``more`` when the list would be short), ``boost`` rules add to scores and re-sort, then
pins take their positions. Cost per list (docs/staff-tools.md): the version check, and a query
only for pinned objects the ranking did not bring.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.db import connections, router, transaction
from django.db.models import CharField, F, FloatField, IntegerField, Value
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import cache_guard
from .results import SimilarHit
from .specs import IndexSpec
from .staff_models import Block, MerchandisingRule, MerchandisingVersion, Pin

logger = logging.getLogger(__name__)

VERSION_KEY = "similarity:merchandising:version"


# ---------------------------------------------------------------------------------------------
# Version: part of every cached similar list's key and of each process's copy of the rules
# ---------------------------------------------------------------------------------------------
#: a shared cache keeps the version this long; a lost race between two staff edits heals by then
VERSION_CACHE_SECONDS = 60


#: set by :func:`one_version` for the length of one render
_held_version: contextvars.ContextVar[str | None] = contextvars.ContextVar("similarity_merch_version", default=None)


@contextlib.contextmanager
def one_version() -> Iterator[str]:
    """Within the block :func:`version` answers what it read on entry: one check per render, and
    the cache key and the rules ``find_similar`` applies agree on it."""
    token = version()
    held = _held_version.set(token)
    try:
        yield token
    finally:
        _held_version.reset(held)


def version() -> str:
    """A token that changes whenever a pin, block or rule changes, in every process.

    The token lives in the database (:class:`~similarity.staff_models.MerchandisingVersion`).
    With a cache shared between processes (Redis, Memcached, the database cache) a render reads
    the cache's copy; a process-local cache (``LocMemCache``, the default without
    ``REDIS_CACHE_URL``) would hide another process's change, so then the row is read (one
    primary-key query)."""
    held = _held_version.get()
    if held is not None:
        return held
    shared = _cache_is_shared()
    if shared:
        value = cache_guard.get(VERSION_KEY)
        if value is not None:
            return str(value)
    token = _stored_token()
    if shared:
        # ``add``: an edit committed meanwhile has ``set`` its newer token; never overwrite it
        cache_guard.add(VERSION_KEY, token, VERSION_CACHE_SECONDS)
    return token


def bump_version() -> None:
    """A new version now (what every save or delete of a pin, block or rule does after commit)."""
    _write_token()
    _publish()


def _cache_is_shared() -> bool:
    # ``cache`` is a proxy; the backend behind it says whether other processes read the same
    return not isinstance(caches[DEFAULT_CACHE_ALIAS], LocMemCache | DummyCache)


def _stored_token() -> str:
    # A plain primary-key SELECT: through the ORM the same read costs ~10x (query compilation),
    # and it runs on every render when the cache is process-local.
    connection = connections[router.db_for_read(MerchandisingVersion)]
    table = connection.ops.quote_name(MerchandisingVersion._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT token FROM {table} WHERE id = 1")
        row = cursor.fetchone()
    if row is None:  # a new (or flushed) database: start one
        return str(MerchandisingVersion.objects.get_or_create(pk=1, defaults={"token": uuid.uuid4().hex})[0].token)
    return str(row[0])


def _write_token() -> None:
    MerchandisingVersion.objects.update_or_create(pk=1, defaults={"token": uuid.uuid4().hex})


def _publish() -> None:
    """The committed token into the shared cache (read back: of two edits committing at once,
    the later token wins whichever callback runs last)."""
    if _cache_is_shared():
        token = _stored_token()
        cache_guard.invalidate("publish the merchandising version",
                               lambda c: c.set(VERSION_KEY, token, VERSION_CACHE_SECONDS))


@receiver([post_save, post_delete], sender=Pin, dispatch_uid="similarity.merch.pin")
@receiver([post_save, post_delete], sender=Block, dispatch_uid="similarity.merch.block")
@receiver([post_save, post_delete], sender=MerchandisingRule, dispatch_uid="similarity.merch.rule")
def _changed(**_: Any) -> None:
    # The token in the same transaction as the change (a rollback takes both back); the shared
    # cache after commit, so a process that reloads the rules under the new token sees the change.
    _write_token()
    transaction.on_commit(_publish)


# ---------------------------------------------------------------------------------------------
# The one place rules are applied
# ---------------------------------------------------------------------------------------------
def apply(
    obj: Any, spec: IndexSpec, hits: list[SimilarHit], *, limit: int, filters: dict[str, Any] | None = None,
    more: Callable[[int], list[SimilarHit]] | None = None,
) -> list[SimilarHit]:
    """``hits`` (best first) as staff want them shown for ``obj``.

    The rules, pins and blocks are read once per :func:`version` and kept in the process, so
    with nothing to load this costs no query. A pinned object already among ``hits`` is moved
    (its object reused); only pins from beyond the list are loaded, in one query with the spec's
    queryset and ``filters`` (a pinned product that went out of stock is not shown under
    ``in_stock=True``). ``more(n)``, the first ``n`` unmerchandised hits, is asked once, and only
    when blocks or exclusions dropped hits that the pins do not make up for.
    """
    key = spec.object_key(obj.pk)
    rules, decisions = _state(spec.label)
    pins, blocked = decisions.get(key, ([], set()))
    if not (pins or blocked or rules):
        return hits
    excluded = _excluded_categories(obj, spec, rules)
    pinned_keys = {target for target, _ in pins}

    def dropped(hit_key: str, hit: SimilarHit) -> bool:
        return hit_key in blocked or bool(excluded and excluded & set(spec.get_taxonomy(hit.object)))

    kept: list[SimilarHit] = []
    found: dict[str, SimilarHit] = {}  # pinned objects the ranking brought (loaded under the filters)
    removed = 0
    for hit in hits:
        hit_key = spec.object_key(hit.pk)
        if hit_key in pinned_keys:
            found[hit_key] = hit
        elif dropped(hit_key, hit):
            removed += 1
        else:
            kept.append(hit)
    placed = _pinned_objects(spec, pins, blocked, key, found, filters or {}) if pins else {}
    if removed and len(kept) + len(placed) < limit and more is not None:
        seen = {hit.pk for hit in kept}
        for hit in more(limit + len(blocked) + len(pinned_keys) + removed):
            hit_key = spec.object_key(hit.pk)
            if hit.pk not in seen and hit_key not in pinned_keys and not dropped(hit_key, hit):
                kept.append(hit)
    kept = _boost(spec, kept, [r for r in rules if r.kind == MerchandisingRule.Kind.BOOST])
    if placed:
        top = hits[0].score if hits else 1.0  # a pin ranks as the model's best
        for target, position in pins:  # sorted by position
            if target in placed:
                pinned = placed[target]
                kept.insert(min(position, len(kept)), SimilarHit(pinned.object, pinned.pk, top, {}))
    return kept[:limit]


@dataclass(frozen=True)
class Plan:
    """What a search can do beforehand so that :func:`apply` needs no query of its own and no
    second search: leave ``blocked_point_ids`` out of the search (``SearchFilter.exclude_ids``)
    and load the objects of ``pinned_keys`` with the hits (rows after the ranked ones)."""

    blocked_point_ids: frozenset[str] = frozenset()
    pinned_keys: tuple[str, ...] = ()


def plan(obj: Any, spec: IndexSpec) -> Plan:
    """The :class:`Plan` for ``obj``'s list, from this process's copy of the decisions (no query
    beyond the :func:`version` check)."""
    key = spec.object_key(obj.pk)
    _rules, decisions = _state(spec.label)
    pins, blocked = decisions.get(key, ([], set()))
    return Plan(
        frozenset(spec.point_id(spec.to_pk(target)) for target in blocked),
        tuple(target for target, _ in pins if target not in blocked and target != key),
    )


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


def forget_local_copy() -> None:
    """Drop this process's copy of the rules, pins and blocks: the next list reads them again
    (what a new process does; for tests that count queries)."""
    _STATE.clear()


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


def _pinned_objects(
    spec: IndexSpec, pins: list[tuple[str, int]], blocked: set[str], own: str, found: dict[str, SimilarHit],
    filters: dict[str, Any],
) -> dict[str, SimilarHit]:
    """The pins that can be shown, by key: those the ranking brought, and the rest loaded in
    one query (none when every pinned object was in the list)."""
    wanted = [target for target, _ in pins if target not in blocked and target != own]
    missing = [spec.to_pk(target) for target in wanted if target not in found]
    objects = spec.filter_queryset(spec.get_queryset(), filters).in_bulk(missing) if missing else {}
    out = {}
    for target in wanted:
        if target in found:
            out[target] = found[target]
        elif (pk := spec.to_pk(target)) in objects:
            out[target] = SimilarHit(objects[pk], pk, 0.0, {})
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
