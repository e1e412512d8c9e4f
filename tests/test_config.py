"""Guards: migrations in sync, settings round-trip, system checks."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import override_settings

from similarity.conf import get_settings


@pytest.mark.django_db
def test_migrations_are_in_sync():
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())


def test_settings_round_trip():
    base = get_settings()
    assert base.index.backend.endswith("QdrantEdgeIndex")
    with override_settings(SIMILARITY={"BATCH_SIZE": 7, "WEIGHTS": {"image": 1.0, "text": 0.0},
                                       "INDEX": {"BACKEND": "similarity.index.qdrant.QdrantServerIndex",
                                                 "URL": "http://qdrant:6333"}}):
        conf = get_settings()
        assert conf.batch_size == 7
        assert conf.weights == {"image": 1.0, "text": 0.0}
        assert conf.index.url == "http://qdrant:6333"
    assert get_settings() == base


@pytest.mark.parametrize(
    ("value", "error_id"),
    [
        ({"NOPE": 1}, "similarity.E001"),
        ({"SPECS": ["catalog.specs.Missing"]}, "similarity.E002"),
        ({"INDEX": {"BACKEND": "similarity.index.nothing.Index"}}, "similarity.E003"),
        ({"INDEX": {"BACKEND": "similarity.index.qdrant.QdrantServerIndex", "PATH": ""}}, "similarity.E004"),
        ({"WEIGHTS": {"image": -1, "text": 1}}, "similarity.E005"),
        ({"DEVICE": "tpu"}, "similarity.E006"),
        ({"BATCH_SIZE": 0}, "similarity.E007"),
        ({"SPECS": []}, "similarity.E008"),
        ({"SPECS": ["catalog.specs.ProductSpec"], "DISPATCHER": "shop.tasks.nothing"}, "similarity.E009"),
    ],
)
def test_misconfiguration_is_a_system_check_error(value, error_id):
    with override_settings(SIMILARITY=value):
        ids = {message.id for message in run_checks()}
    assert error_id in ids


def test_default_configuration_passes_the_checks():
    assert [m for m in run_checks() if m.id and m.id.startswith("similarity.")] == []


def test_error_messages_name_the_setting():
    with override_settings(SIMILARITY={"SPECS": [], "DISPATCHER": "shop.tasks.nothing"}):
        messages = {m.id: m for m in run_checks() if m.id and m.id.startswith("similarity.")}
    assert messages["similarity.E008"].level == messages["similarity.E009"].level == 40  # ERROR
    assert "SIMILARITY['SPECS'] is empty" in messages["similarity.E008"].msg
    assert "SIMILARITY['DISPATCHER'] 'shop.tasks.nothing' cannot be imported" in messages["similarity.E009"].msg


def test_the_app_defaults_name_nothing_of_the_example_project():
    from similarity.conf import SimilaritySettings

    defaults = SimilaritySettings()
    assert defaults.specs == ()
    assert defaults.dispatcher == "similarity.tasks.dispatch"
