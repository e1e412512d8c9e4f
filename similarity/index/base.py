"""The ``VectorIndex`` protocol and the store-neutral types it speaks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

VECTOR_NAMES = ("image", "text")


@dataclass(frozen=True)
class PointData:
    """A point to write, or one read back (``vectors`` empty unless asked for)."""

    id: str
    vectors: dict[str, list[float]]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchFilter:
    """Store-neutral filter: each backend translates it into its own filter object.

    ``match``: field must equal the value (for list fields: contain it).
    ``match_any``: field must equal one of the values.
    ``exclude``: field must not equal the value.
    ``ranges``: field within ``(gte, lte)`` (either may be ``None``).
    ``exclude_ids``: point ids to leave out.
    ``ids``: when given, only these point ids.
    """

    match: dict[str, Any] = field(default_factory=dict)
    match_any: dict[str, list[Any]] = field(default_factory=dict)
    exclude: dict[str, Any] = field(default_factory=dict)
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    exclude_ids: frozenset[str] = frozenset()
    ids: frozenset[str] | None = None

    def __bool__(self) -> bool:
        return bool(
            self.match or self.match_any or self.exclude or self.ranges or self.exclude_ids or self.ids is not None
        )


@runtime_checkable
class VectorIndex(Protocol):
    """A collection of points with named vectors ``image`` and ``text`` (cosine) and a payload."""

    def ensure(self, dims: dict[str, int], payload_schema: dict[str, str]) -> None:
        """Create the collection and payload indexes if missing (idempotent)."""

    def upsert(self, points: list[PointData]) -> None: ...

    def delete(self, ids: list[str]) -> None: ...

    def set_payload(self, id: str, payload: dict[str, Any]) -> None: ...

    def retrieve(self, ids: list[str], *, with_vectors: bool = False) -> dict[str, PointData]: ...

    def query(
        self, using: str, vector: list[float], *, limit: int, filter: SearchFilter | None = None
    ) -> list[Hit]: ...

    def count(self) -> int: ...

    def optimize(self) -> bool:
        """Build the HNSW graphs of what is not indexed yet; True when anything changed. A rebuild
        optimises its new generation before the switch, so it goes live indexed."""

    def iter_points(self, *, batch_size: int = 256) -> Iterator[PointData]:
        """Every point, payload only, in pages (for reconciliation)."""

    def start_rebuild(self, dims: dict[str, int], payload_schema: dict[str, str]) -> VectorIndex:
        """A new, empty generation to fill; the live one keeps answering meanwhile."""

    @property
    def generation(self) -> str:
        """Name of the generation this object reads and writes."""

    def resume_rebuild(self, generation: str) -> VectorIndex: ...

    def abandon_rebuild(self, generation: str) -> None: ...

    def finish_rebuild(self, new: VectorIndex) -> None:
        """Make ``new`` the live generation in one atomic step and drop the old one."""

    def close(self) -> None: ...
