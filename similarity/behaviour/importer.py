"""Load events from a CSV: ``time,visitor,session,order,sku,event,quantity,price``.

Streamed (one batch of rows in memory at a time), idempotent (each event has a key, a digest of
its fields; a row already imported is skipped by the database's unique constraint) and forgiving:
a bad row or an unknown sku is reported with its row number and costs that row only. Skus are
resolved through the spec's ``lookup_field``, one query per batch.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils.dateparse import parse_datetime

from .. import registry
from ..specs import IndexSpec
from .models import Event, EventKind

CANONICAL = ("time", "visitor", "session", "order", "sku", "event", "quantity", "price")
REQUIRED = ("time", "sku")
BATCH_SIZE = 5000
#: at most this many row problems are kept with their row numbers (the rest are only counted)
MAX_REPORTED = 1000


class EventFormatError(ValueError):
    """The file as a whole cannot be read as events (a missing column, an unknown mapping)."""


@dataclass
class EventImportReport:
    rows: int = 0
    created: int = 0
    #: rows whose event was already there (an earlier import of the same file)
    existing: int = 0
    unknown_skus: int = 0
    bad_rows: int = 0
    #: rows left out because their time is after ``until``
    later: int = 0
    #: (row number, problem), the header being row 1
    problems: list[tuple[int, str]] = field(default_factory=list)

    def problem(self, row: int, text: str) -> None:
        if len(self.problems) < MAX_REPORTED:
            self.problems.append((row, text))


def parse_columns(text: str | None) -> dict[str, str]:
    """``"order=invoice,visitor=customer"`` → canonical name → the file's column name."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        canonical, sep, theirs = part.partition("=")
        canonical, theirs = canonical.strip(), theirs.strip()
        if not sep or not theirs or canonical not in CANONICAL:
            raise EventFormatError(
                f"--columns takes canonical=theirs pairs with canonical among {', '.join(CANONICAL)}; "
                f"not {part.strip()!r}"
            )
        mapping[canonical] = theirs
    return mapping


def parse_time(value: str) -> datetime:
    """ISO 8601 (a naive time is UTC) or epoch seconds."""
    value = value.strip()
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except ValueError:
        pass
    try:
        parsed = parse_datetime(value) or datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"time {value!r} is neither ISO 8601 nor epoch seconds") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def event_key(label: str, object_id: str, kind: str, when: datetime, visitor: str, session: str,
              order: str, quantity: int, price: Decimal | None) -> str:
    text = "\x1f".join((label, object_id, kind, when.isoformat(), visitor, session, order, str(quantity), str(price)))
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


class SkuResolver:
    """sku → object key through the spec's ``lookup_field``; unknown skus are remembered too."""

    def __init__(self, spec: IndexSpec) -> None:
        self.spec = spec
        self.known: dict[str, str | None] = {}

    def resolve(self, skus: set[str]) -> None:
        missing = [s for s in skus if s not in self.known]
        if not missing:
            return
        field_name = self.spec.lookup_field
        rows = self.spec.model_class._default_manager.filter(**{f"{field_name}__in": missing}).values_list(
            field_name, "pk"
        )
        found = {str(value): self.spec.object_key(pk) for value, pk in rows}
        for sku in missing:
            self.known[sku] = found.get(sku)

    def __getitem__(self, sku: str) -> str | None:
        return self.known.get(sku)


def read_rows(path: Path, columns: dict[str, str], encoding: str) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding=encoding) as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        source = {name: columns.get(name, name) for name in CANONICAL}
        absent = [f"{name} (column {source[name]!r})" for name in REQUIRED if source[name] not in header]
        if absent:
            raise EventFormatError(f"{path.name} has no {', '.join(absent)}; its columns: {', '.join(header)}")
        wanted = {name: col for name, col in source.items() if col in header}
        for number, raw in enumerate(reader, start=2):
            yield number, {name: (raw.get(col) or "").strip() for name, col in wanted.items()}


def _event(row: dict[str, str], label: str, object_id: str) -> Event:
    when = parse_time(row["time"])
    order = row.get("order", "")
    kind = row.get("event", "").lower() or (EventKind.PURCHASE if order else EventKind.VIEW)
    if kind not in EventKind.values:
        raise ValueError(f"event {kind!r} is not one of {', '.join(EventKind.values)}")
    quantity = int(float(row["quantity"])) if row.get("quantity") else 1
    try:
        price = Decimal(row["price"]).quantize(Decimal("0.01")) if row.get("price") else None
    except InvalidOperation:
        raise ValueError(f"price {row['price']!r} is not a number") from None
    visitor, session = row.get("visitor", ""), row.get("session", "")
    if len(visitor) > 100 or len(session) > 100 or len(order) > 100:
        raise ValueError("visitor, session and order take at most 100 characters")
    return Event(
        model_label=label, object_id=object_id, kind=kind, visitor=visitor, session=session, order=order,
        quantity=quantity, price=price, time=when,
        key=event_key(label, object_id, kind, when, visitor, session, order, quantity, price),
    )


def import_events(
    path: str | Path, *, columns: dict[str, str] | None = None, model: Any = None, encoding: str = "utf-8",
    batch_size: int = BATCH_SIZE, progress: Callable[[int], None] | None = None, until: datetime | None = None,
) -> EventImportReport:
    """Import the events of a CSV file (see the module docstring); returns what happened.
    With ``until``, rows after that time are left out (a time split for evaluation)."""
    spec = registry.get_spec(model)
    resolver = SkuResolver(spec)
    report = EventImportReport()
    batch: list[tuple[int, dict[str, str]]] = []
    for number, row in read_rows(Path(path), columns or {}, encoding):
        report.rows += 1
        batch.append((number, row))
        if len(batch) >= batch_size:
            _flush(batch, spec.label, resolver, report, until)
            batch = []
            if progress:
                progress(report.rows)
    _flush(batch, spec.label, resolver, report, until)
    return report


#: the columns ``insert_events`` writes, in order
_COLUMNS = ("model_label", "object_id", "kind", "visitor", "session", "order", "quantity", "price", "time", "key")


def insert_events(events: list[Event]) -> None:
    """Insert new events with one ``executemany``, skipping keys already there.

    The ORM's ``bulk_create`` compiles every value of every row (SQLite takes about 90 rows per
    statement): measured at two thirds of the import's time. The statement comes from the
    backend's own ``insert_statement``/``on_conflict_suffix_sql``, so it is right on SQLite,
    PostgreSQL and MySQL alike.
    """
    if not events:
        return
    from django.db import connections, router
    from django.db.models.constants import OnConflict

    connection = connections[router.db_for_write(Event)]
    ops = connection.ops
    meta = Event._meta
    columns = ", ".join(ops.quote_name(str(getattr(meta.get_field(name), "column", name))) for name in _COLUMNS)
    placeholders = ", ".join(["%s"] * len(_COLUMNS))
    suffix = ops.on_conflict_suffix_sql([meta.get_field("key")], OnConflict.IGNORE, None, None)
    sql = (f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {ops.quote_name(meta.db_table)} "
           f"({columns}) VALUES ({placeholders}) {suffix}")
    rows = [
        (e.model_label, e.object_id, e.kind, e.visitor, e.session, e.order, e.quantity,
         ops.adapt_decimalfield_value(e.price, 12, 2), ops.adapt_datetimefield_value(e.time), e.key)
        for e in events
    ]
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _flush(batch: list[tuple[int, dict[str, str]]], label: str, resolver: SkuResolver,
           report: EventImportReport, until: datetime | None = None) -> None:
    if not batch:
        return
    resolver.resolve({row["sku"] for _n, row in batch if row.get("sku")})
    events: dict[str, Event] = {}
    valid = 0
    for number, row in batch:
        sku = row.get("sku", "")
        object_id = resolver[sku] if sku else None
        if object_id is None:
            report.unknown_skus += 1
            report.problem(number, f"unknown sku {sku!r}" if sku else "no sku")
            continue
        try:
            event = _event(row, label, object_id)
        except (ValueError, KeyError, OverflowError) as exc:
            report.bad_rows += 1
            report.problem(number, str(exc))
            continue
        if until is not None and event.time > until:
            report.later += 1
            continue
        valid += 1
        events.setdefault(event.key, event)
    keys = list(events)
    already = set(Event.objects.filter(key__in=keys).values_list("key", flat=True))
    fresh = [events[k] for k in keys if k not in already]
    insert_events(fresh)
    report.created += len(fresh)
    # rows seen before: imported by an earlier run, or the same event twice in the file
    report.existing += valid - len(fresh)
