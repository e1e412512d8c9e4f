"""What the read side returns: plain dataclasses, safe to cache and to render."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ResultStatus:
    OK = "ok"
    NOT_INDEXED = "not_indexed"
    UNAVAILABLE = "unavailable"


@dataclass
class SimilarHit:
    object: Any
    pk: int
    score: float
    scores: dict[str, float]


@dataclass
class SimilarResult:
    status: str
    hits: list[SimilarHit] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == ResultStatus.OK

    def __iter__(self) -> Any:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)


@dataclass
class IndexReport:
    """What one ``index_products`` call did, for logs, commands and tests."""

    indexed: int = 0
    removed: int = 0
    encoded: dict[str, int] = field(default_factory=lambda: {"image": 0, "text": 0})
    failed: dict[str, int] = field(default_factory=lambda: {"image": 0, "text": 0})
    errors: list[str] = field(default_factory=list)
    #: outbox tokens of the changes this read covered (a rebuild need not catch up with them)
    covered: list[str] = field(default_factory=list)

    def merge(self, other: IndexReport) -> None:
        self.indexed += other.indexed
        self.removed += other.removed
        for key in self.encoded:
            self.encoded[key] += other.encoded[key]
            self.failed[key] += other.failed[key]
        self.errors.extend(other.errors)
        self.covered.extend(other.covered)
