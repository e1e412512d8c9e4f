"""Shared fixtures. Encoders are the real models with the offline weights; each test gets its
own Qdrant Edge folder."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from similarity import merchandising, registry

FLIPKART = Path(django_settings.BASE_DIR).parent / "shared" / "datasets" / "flipkart-1050"


@pytest.fixture(autouse=True)
def _isolated_index(settings: Any, tmp_path: Path) -> Iterator[None]:
    """A fresh Edge shard folder and media folder per test; closed afterwards."""
    settings.SIMILARITY = {
        **settings.SIMILARITY,
        "INDEX": {**settings.SIMILARITY["INDEX"], "BACKEND": "similarity.index.edge.QdrantEdgeIndex",
                  "PATH": str(tmp_path / "edge")},
    }
    settings.MEDIA_ROOT = str(tmp_path / "media")
    merchandising.forget_local_copy()  # as a new process: the rules are read on the first list
    yield
    registry.reset()


@pytest.fixture
def flipkart() -> Path:
    if not (FLIPKART / "catalog.csv").is_file():
        pytest.skip("../shared/datasets/flipkart-1050 is not present")
    return FLIPKART


@pytest.fixture
def flipkart_rows(flipkart: Path) -> list[dict[str, str]]:
    with open(flipkart / "catalog.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def dispatched(settings: Any) -> list[tuple[str, list[int], list[int]]]:
    """Replace the Celery dispatcher with a recorder (for change-capture tests)."""
    calls: list[tuple[str, list[int], list[int]]] = []
    RECORDER.calls = calls
    settings.SIMILARITY = {**settings.SIMILARITY, "DISPATCHER": "tests.conftest.RECORDER"}
    return calls


class _Recorder:
    calls: list[tuple[str, list[int], list[int]]] = []

    def __call__(self, label: str, index_ids: list[str], remove_ids: list[str]) -> None:
        # Dispatchers get object keys (text); the example shop's are integers, compared as such.
        self.calls.append((label, [int(k) for k in index_ids], [int(k) for k in remove_ids]))


RECORDER = _Recorder()
