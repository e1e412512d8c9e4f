"""Duplicate detection: the signals, a real scan that finds planted copies (bench/plant_duplicates),
the command's JSON, the review queue (decisions remembered, link as variants through the spec),
the admin warning, the periodic task and the evaluation."""

from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from bench.plant_duplicates import edit_title, plant
from similarity import services, tasks
from similarity.duplicates import judge, normalise_title, title_similarity
from similarity.models import DuplicateCandidate

from .staff_catalog import fresh_merchandising, import_rows, pick, product  # noqa: F401


def test_titles_are_compared_normalised() -> None:
    assert normalise_title("  Sony WH-1000XM4  Headphones!! ") == "sony wh 1000xm4 headphones"
    assert title_similarity("Sony WH-1000XM4 Headphones", "HEADPHONES sony wh 1000xm4") == 1.0
    assert title_similarity("Sony WH-1000XM4 Headphones", "Prestige Pressure Cooker 5 L") < 0.5


def test_judge_needs_a_similar_photo_and_a_similar_title() -> None:
    score, reasons = judge(0.97, 3, 0.95)
    assert score == pytest.approx(0.95)
    assert reasons == ["same photo (perceptual hash 3/64 bits apart)", "near-identical photo (image cosine 0.970)",
                       "near-identical title (95% alike)"]
    assert judge(0.99, 0, 0.4)[0] == pytest.approx(0.4)  # the same studio shot of another product
    assert judge(0.5, 30, 1.0)[0] == pytest.approx(0.5)  # the same title pattern, another photo
    assert judge(None, None, 1.0)[0] == 0.0  # nothing to compare the photos by


@pytest.fixture
def planted_shop(flipkart: Path, flipkart_rows: list[dict[str, str]], tmp_path: Path) -> dict[str, Any]:
    """9 flipkart-1050 products and planted copies of 3 of them (edited photo and title)."""
    rows = pick(flipkart_rows, {"Watches": 3, "Kitchen & Dining": 3, "Baby Care": 3})
    source = tmp_path / "source"
    source.mkdir()
    with open(source / "catalog.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "image": str(flipkart / row["image"])})
    planted = plant(source / "catalog.csv", tmp_path / "planted", count=3, seed=1)
    import_rows(rows, tmp_path / "csv", flipkart)
    with open(tmp_path / "planted" / "catalog.csv", newline="", encoding="utf-8") as fh:
        copies = list(csv.DictReader(fh))
    import_rows(copies, tmp_path / "csv", tmp_path / "planted", name="copies.csv")
    return {"planted": planted, "file": tmp_path / "planted" / "planted.csv"}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_scan_queue_admin_and_evaluation(planted_shop: dict[str, Any], tmp_path: Path, admin_client: Any) -> None:
    planted = {frozenset((p["sku_a"], p["sku_b"])) for p in planted_shop["planted"]}

    # The command finds every planted pair, with its reasons, keyed by SKU.
    out = tmp_path / "dups.json"
    call_command("similarity_duplicates", "--json", str(out), stdout=StringIO())
    pairs = json.loads(out.read_text())
    assert planted <= {frozenset((p["sku_a"], p["sku_b"])) for p in pairs}
    for pair in pairs:
        assert set(pair) == {"sku_a", "sku_b", "score", "reasons"}
        assert pair["score"] >= services.DUPLICATE_THRESHOLD and pair["reasons"]

    # The periodic task fills the review queue.
    counts = tasks.scan_duplicates()["catalog.product"]
    assert counts["new"] == len(pairs)
    first, second, third = (DuplicateCandidate.objects.get(name_a__in=p, name_b__in=p) for p in planted)

    # The admin product page warns; the queue's actions decide.
    copy = product(first.name_a if first.name_a.startswith("DUP-") else first.name_b)
    page = admin_client.get(f"/admin/catalog/product/{copy.pk}/change/").content.decode()
    assert "Possible duplicate of" in page and (first.name_a in page or first.name_b in page)
    changelist = "/admin/similarity/duplicatecandidate/"
    admin_client.post(changelist, {"action": "dismiss", "_selected_action": [first.pk]})
    admin_client.post(changelist, {"action": "link_as_variants", "_selected_action": [second.pk]})
    admin_client.post(changelist, {"action": "confirm", "_selected_action": [third.pk]})
    a, b = product(second.name_a), product(second.name_b)
    assert b.parent_id == a.pk  # through ProductSpec.link_variants

    # A dismissed pair never comes back; the page no longer warns about it.
    tasks.scan_duplicates()
    first.refresh_from_db()
    assert first.decision == DuplicateCandidate.Decision.DISMISSED
    assert DuplicateCandidate.objects.filter(name_a=first.name_a, name_b=first.name_b).count() == 1
    assert "Possible duplicate of" not in admin_client.get(f"/admin/catalog/product/{copy.pk}/change/").content.decode()

    # The evaluation on the planted file: everything planted is found, and nothing else.
    report = StringIO()
    call_command("similarity_evaluate", "--task", "duplicates", "--planted", str(planted_shop["file"]),
                 "--json", str(tmp_path / "eval.json"), stdout=report)
    metrics = json.loads((tmp_path / "eval.json").read_text())["thresholds"]
    at_default = metrics[f"{services.DUPLICATE_THRESHOLD:.2f}"]
    assert at_default["recall"] == 1.0 and at_default["precision"] == 1.0
    assert "precision" in report.getvalue()


def test_planting_edits_titles_like_a_reseller() -> None:
    import random

    rng = random.Random(0)
    title = "Sonata Analog Watch For Men"
    assert edit_title(title, "case", rng).lower() == title.lower()
    assert len(edit_title(title, "drop", rng).split()) == len(title.split()) - 1
    assert len(edit_title(title, "add", rng).split()) == len(title.split()) + 1
