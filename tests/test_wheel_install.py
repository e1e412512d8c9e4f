"""The app as a user gets it: build the wheel, install it into a fresh virtualenv, start a new
project with ``django-admin startproject``, add ``similarity`` and a tiny app with its own model
and spec, migrate, save objects and get similar objects back, with the real encoders.

The fresh virtualenv reaches the heavy dependencies (torch, timm, sentence-transformers, qdrant)
through a ``.pth`` line to this test run's site-packages, so nothing is downloaded; the wheel
itself, and so ``similarity``, is installed by pip into the new environment, and pip checks that
every dependency it declares is satisfied. The repository is never on the new project's path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings

ROOT = Path(django_settings.BASE_DIR)

NOTES_MODELS = '''
from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)

    def __str__(self):
        return self.title
'''

NOTES_SPECS = '''
from similarity.specs import IndexSpec


class NoteSpec(IndexSpec):
    model = "notes.Note"
    lookup_field = "title"

    def get_text(self, obj):
        return f"{obj.title}. {obj.body}"
'''

CELERY = '''
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
'''

SETTINGS = '''

INSTALLED_APPS += ["similarity", "notes"]
SIMILARITY = {
    "SPECS": ["notes.specs.NoteSpec"],
    "INDEX": {"PATH": str(BASE_DIR / "var" / "qdrant-edge")},
    "DEVICE": "cpu",
}
# No broker in development: the app's tasks run in this process right after commit.
CELERY_TASK_ALWAYS_EAGER = True
'''

SCRIPT = '''
import sys
from django.db import transaction
import similarity
from similarity import services
from notes.models import Note

titles = [
    ("Stainless steel wrist watch", "analog dial and a leather strap"),
    ("Digital sports watch", "water resistant wrist watch with a stopwatch"),
    ("Cotton bath towel", "soft, absorbent, quick drying"),
    ("Linen hand towel", "for the bathroom or the kitchen"),
]
with transaction.atomic():
    notes = [Note.objects.create(title=t, body=b) for t, b in titles]
watch = notes[0]
result = services.find_similar(watch, limit=3)
print("status", result.status)
for hit in result.hits:
    print(f"hit {hit.score:.3f} {hit.object.title}")
towel = services.find_similar(notes[2], limit=1).hits[0].object.title
print("towel ->", towel)
print("similarity from", similarity.__file__)
print("example shop imported:", sorted(m for m in sys.modules if m.split(".")[0] in {"catalog", "workers", "config"}))
'''


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_project_and_finds_similar_objects(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH",
                                                                "DATABASE_URL", "VAR_DIR", "CELERY_BROKER_URL"}}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")

    # 1. The wheel, built the way a release is.
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)], ROOT, env)
    wheel = next(dist.glob("catalog_similarity-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "similarity/templates/similarity/widget.html" in names
    assert "similarity/static/similarity/admin.css" in names
    assert any(n.startswith("similarity/migrations/0003_") for n in names)
    assert "similarity/tasks.py" in names
    assert not [n for n in names if n.split("/")[0] in {"catalog", "config", "workers", "tests", "bench"}]

    # 2. A fresh virtualenv; heavy dependencies reached through a .pth line, the wheel by pip.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    tmp_path, env).strip().splitlines()[-1])
    (site / "_shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # The venv's own old setuptools would shadow the newer one torch declares it needs.
    run([str(python), "-m", "pip", "uninstall", "-y", "-q", "setuptools"], tmp_path, env)
    run([str(python), "-m", "pip", "install", "--no-index", str(wheel)], tmp_path, env)
    run([str(python), "-m", "pip", "check"], tmp_path, env)

    # 3. A new project with a tiny app of its own.
    project = tmp_path / "project"
    project.mkdir()
    # django-admin (python -m django): Django itself is one of the dependencies reached via .pth
    run([str(python), "-m", "django", "startproject", "shop", str(project)], tmp_path, env)
    (project / "shop" / "celery.py").write_text(CELERY)
    (project / "shop" / "__init__.py").write_text("from .celery import app as celery_app\n")
    run([str(python), "manage.py", "startapp", "notes"], project, env)
    with open(project / "shop" / "settings.py", "a") as fh:
        fh.write(SETTINGS)
    (project / "notes" / "models.py").write_text(NOTES_MODELS)
    (project / "notes" / "specs.py").write_text(NOTES_SPECS)

    run([str(python), "manage.py", "check"], project, env)
    run([str(python), "manage.py", "makemigrations", "notes"], project, env)
    run([str(python), "manage.py", "migrate", "--noinput"], project, env)

    # 4. Save objects the normal way and ask for similar ones.
    out = run([str(python), "manage.py", "shell", "-c", textwrap.dedent(SCRIPT)], project, env)
    print(out)
    assert "status ok" in out
    hits = [line for line in out.splitlines() if line.startswith("hit ")]
    assert hits and hits[0].endswith("Digital sports watch"), out
    assert "towel -> Linen hand towel" in out
    assert f"similarity from {site}" in out, "similarity comes from the installed wheel"
    assert "example shop imported: []" in out
    similar = run([str(python), "manage.py", "similar", "Cotton bath towel", "--limit", "1"], project, env)
    print(similar)
    assert "Linen hand towel" in similar
