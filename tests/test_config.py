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


def test_embedded_index_with_a_separate_celery_worker_is_an_error(settings):
    from workers.celery import app

    app.conf.task_always_eager = False
    try:
        ids = {m.id for m in run_checks()}
    finally:
        app.conf.task_always_eager = True
    assert "similarity.E010" in ids
    settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": {"BACKEND": "similarity.index.qdrant.QdrantServerIndex",
                                                            "URL": "http://qdrant:6333"}}
    app.conf.task_always_eager = False
    try:
        assert "similarity.E010" not in {m.id for m in run_checks()}, "a Qdrant server serves many processes"
    finally:
        app.conf.task_always_eager = True


@pytest.mark.parametrize("env", [{"WEB_CONCURRENCY": "3"}, {"GUNICORN_CMD_ARGS": "--bind :8000 --workers 4"},
                                 {"GUNICORN_CMD_ARGS": "-w 2"}])
def test_embedded_index_with_several_gunicorn_workers_is_an_error(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert "similarity.E011" in {m.id for m in run_checks()}


def test_one_gunicorn_worker_is_fine(monkeypatch):
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--workers 1 --threads 8")
    assert "similarity.E011" not in {m.id for m in run_checks()}
