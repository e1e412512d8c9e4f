"""Category suggestions: the vote, the classifier blended with it, the suggestion from real
neighbours, the command, the admin (shown on the product page, applied by an action through the
spec) and the evaluation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from html import escape
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command

from catalog.models import Product
from similarity import categories, services
from similarity.categories import CategoryClassifier, vote

from .staff_catalog import fresh_merchandising, import_rows, pick, product  # noqa: F401


def test_vote_weights_by_similarity_and_stays_on_one_branch() -> None:
    suggestion = vote(sharpen=1, neighbours=[
        (["Watches", "Wrist Watches", "Analog"], 0.9),
        (["Watches", "Wrist Watches", "Digital"], 0.8),
        (["Watches", "Wrist Watches", "Analog"], 0.7),
        (["Kitchen", "Mugs", "Coffee"], 0.95),
        ([], 0.99),  # no category: no vote
    ])
    assert suggestion is not None
    assert suggestion.levels[0][0] == (("Watches",), pytest.approx(2.4 / 3.35))
    # The third level: Analog wins under Wrist Watches (1.6 of 2.4 Watches votes would be a
    # majority of that branch, but only 1.6 / 3.35 of all votes: not a majority, so it stops).
    assert suggestion.levels[2][0][0] == ("Watches", "Wrist Watches", "Analog")
    assert suggestion.path == ["Watches", "Wrist Watches"]
    assert suggestion.confidence == pytest.approx(2.4 / 3.35)
    assert suggestion.label == "Watches > Wrist Watches"
    assert suggestion.as_dict()["alternatives"] == [
        {"category": "Kitchen > Mugs", "confidence": pytest.approx(0.95 / 3.35, abs=1e-4)}
    ]
    assert vote([([], 0.9), (["A"], 0.0)]) is None


def test_vote_keeps_the_root_even_without_a_majority() -> None:
    suggestion = vote([(["A", "B"], 0.5), (["C", "D"], 0.4), (["E", "F"], 0.3)], sharpen=1)
    assert suggestion is not None and suggestion.path == ["A"]


def test_the_classifier_blends_in_per_level_and_the_path_stays_a_branch() -> None:
    neighbours = [(["A", "B"], 0.9), (["C", "D"], 0.8)]
    prior = [{("A",): 0.2, ("C",): 0.8}, {("A", "B"): 0.05, ("C", "D"): 0.55, ("C", "E"): 0.4}]
    alone = vote(neighbours, sharpen=1)
    assert alone is not None and alone.path == ["A", "B"]
    blended = vote(neighbours, sharpen=1, prior=prior, prior_weight=0.5)
    assert blended is not None
    # level 1: the classifier turns the vote (A 0.9 against C 0.8) round
    assert blended.levels[0][0] == (("C",), pytest.approx(0.5 * 0.8 / 1.7 + 0.5 * 0.8))
    assert blended.levels[0][1] == (("A",), pytest.approx(0.5 * 0.9 / 1.7 + 0.5 * 0.2))
    assert blended.path == ["C", "D"]
    assert blended.confidence == pytest.approx(0.5 * 0.8 / 1.7 + 0.5 * 0.55)
    # no neighbour with a category: the classifier alone; weight 0: the vote alone
    only_prior = vote([], prior=prior)
    assert only_prior is not None and only_prior.path == ["C", "D"] and only_prior.neighbours == 0
    assert vote(neighbours, sharpen=1, prior=prior, prior_weight=0.0) == alone


def test_the_classifier_learns_each_level_and_needs_enough_labels() -> None:
    rng = np.random.default_rng(0)
    centres = {("A", "B"): 0, ("A", "C"): 1, ("D", "E"): 2}
    paths = [list(path) for path in centres for _ in range(20)]
    matrix = np.stack([np.eye(4)[centres[tuple(p)]] + rng.normal(0, 0.1, 4) for p in paths]).astype(np.float32)
    matrix = np.vstack([matrix, np.ones((1, 4), dtype=np.float32)])  # one more row, without a category
    batches = [({"image": matrix[:30, :2], "text": matrix[:30, 2:]}, paths[:30]),
               ({"image": matrix[30:, :2], "text": matrix[30:, 2:]}, [*paths[30:], []])]
    classifier = CategoryClassifier.fit(batches, min_labelled=10)
    assert classifier is not None and classifier.trained_on == 60 and len(classifier.levels) == 2
    assert classifier.dims == {"image": 2, "text": 2}
    (levels,) = classifier.predict(np.eye(4, dtype=np.float32)[[1]])
    assert max(levels[0], key=levels[0].__getitem__) == ("A",)
    assert max(levels[1], key=levels[1].__getitem__) == ("A", "C")
    assert classifier.predict_vectors({"image": [0.0, 3.0], "text": [0.0, 0.0]}) == levels  # unit-scaled
    assert CategoryClassifier.fit(batches, min_labelled=61) is None


def test_the_error_breakdown_says_where_the_level_2_misses_are() -> None:
    from similarity.evaluation.catalog import EvalCatalog
    from similarity.evaluation.categories import error_breakdown

    paths = [["A", "B"], ["A", "B"], ["A", "C"], ["D", "E"], ["D", "F"], ["A", "B"]]
    catalog = EvalCatalog(pks=list(range(6)), skus=[str(i) for i in range(6)], titles=[""] * 6, texts=[""] * 6,
                          categories=paths, groups=np.arange(6), vectors={}, present={})
    hidden = np.array([2, 3, 4, 5])
    known = [p if i not in hidden else [] for i, p in enumerate(paths)]  # A > B twice; nothing else
    suggestions = [
        vote([(["A", "B"], 0.9)]),  # truth A > C (no labelled product): level 1 right
        vote([(["A", "B"], 0.9)]),  # truth D > E: level 1 wrong as well
        None,                       # truth D > F: nothing suggested
        vote([(["A", "B"], 0.9)]),  # right
    ]
    errors = error_breakdown(catalog, hidden, suggestions, known)
    assert errors["misses"] == 3 and errors["level above right"] == 1
    assert errors["labelled products in the true category"] == {"0": 3, "1-4": 0, "5-19": 0, "20+": 0}
    assert errors["confusions"][0] == ["A > C", "A > B", 1]
    assert ["D > F", "", 1] in errors["confusions"]


@pytest.fixture(autouse=True)
def no_cached_classifier() -> Iterator[None]:
    categories.forget_classifiers()
    yield
    categories.forget_classifiers()


@pytest.fixture
def shop(flipkart: Path, flipkart_rows: list[dict[str, str]], tmp_path: Path) -> dict[str, Any]:
    """6 watches and 6 coffee mugs; one more watch imported without its category."""
    watches = [r for r in flipkart_rows if r["image"] and r["category"].startswith("Watches > Wrist Watches")]
    mugs = [r for r in flipkart_rows if r["image"] and r["category"].startswith("Kitchen & Dining > Coffee Mugs")]
    rows = watches[:6] + mugs[:6]
    orphan = {**watches[6], "category": ""}
    import_rows([*rows, orphan], tmp_path / "csv", flipkart)
    return {"orphan": product(orphan["sku"]), "truth": watches[6]["category"]}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_suggestion_command_and_admin(shop: dict[str, Any], tmp_path: Path, admin_client: Any) -> None:
    orphan = shop["orphan"]
    suggestion = services.suggest_category(orphan)
    assert suggestion is not None
    assert suggestion.path == shop["truth"].split(" > ")[:len(suggestion.path)]
    assert suggestion.path[:2] == ["Watches", "Wrist Watches"]
    assert suggestion.confidence > 0.5

    # The command, only for products without a category, keyed by the spec's lookup field (SKU).
    out = tmp_path / "suggestions.json"
    call_command("similarity_suggest_categories", "--only-missing", "--json", str(out), stdout=StringIO())
    written = json.loads(out.read_text())
    assert list(written) == [orphan.sku]
    assert written[orphan.sku]["category"] == suggestion.label
    assert written[orphan.sku]["confidence"] == pytest.approx(suggestion.confidence, abs=1e-4)

    # The admin product page shows it; the action applies it through spec.apply_category.
    page = admin_client.get(f"/admin/catalog/product/{orphan.pk}/change/").content.decode()
    assert f"Suggested: <strong>{escape(suggestion.label)}</strong> ({suggestion.confidence:.2f})" in page
    response = admin_client.post("/admin/catalog/product/", {
        "action": "apply_suggested_category", "_selected_action": [orphan.pk],
    }, follow=True)
    assert "Applied the suggested category to 1" in response.content.decode()
    assert str(Product.objects.get(pk=orphan.pk).category) == suggestion.label


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_classifier_learns_from_labelled_products_and_is_cached(
    shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    orphan = shop["orphan"]
    vote_alone = services.suggest_category(orphan, classifier=None)
    assert vote_alone is not None
    # 12 labelled products are too few by default: the vote decides alone
    assert categories.category_classifier() is None
    assert services.suggest_category(orphan) == vote_alone

    monkeypatch.setattr(categories, "MIN_LABELLED", 5)
    categories.forget_classifiers()
    classifier = categories.category_classifier()
    assert classifier is not None and classifier.trained_on == 12  # not the orphan: it has no category
    assert categories.category_classifier() is classifier  # cached while the index is unchanged
    blended = services.suggest_category(orphan)
    assert blended is not None and blended != vote_alone
    assert blended.path[:2] == ["Watches", "Wrist Watches"]
    assert blended.levels[0][0][0] == ("Watches",) and blended.levels[0][0][1] > 0.5
    # a product that has a category was learned from: its second opinion is the vote alone
    watch = Product.objects.exclude(pk=orphan.pk).filter(category__isnull=False).first()
    assert services.suggest_category(watch) == services.suggest_category(watch, classifier=None)

    # the index changes (a product is deleted, and so removed from it): trained again
    Product.objects.filter(pk=watch.pk).delete()
    retrained = categories.category_classifier()
    assert retrained is not classifier and retrained is not None and retrained.trained_on == 11


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_evaluate_categories_beats_the_most_frequent_baseline(
    flipkart: Path, flipkart_rows: list[dict[str, str]], tmp_path: Path,
) -> None:
    import_rows(pick(flipkart_rows, {"Watches": 5, "Kitchen & Dining": 5, "Computers": 5}), tmp_path / "csv",
                flipkart)
    out = StringIO()
    report = tmp_path / "categories.json"
    call_command("similarity_evaluate", "--task", "categories", "--hide", "0.2", "--seed", "0",
                 "--json", str(report), stdout=out)
    text = out.getvalue()
    assert "3 of 15 products had their category hidden" in text
    levels = json.loads(report.read_text())["levels"]
    assert set(levels) == {"level 1", "level 2", "level 3"}
    top = levels["level 1"]
    assert top["products"] == 3
    assert top["accuracy@1"] > top["baseline accuracy@1"]
    assert top["accuracy@3"] >= top["accuracy@1"]
    assert json.loads(report.read_text())["classifier"]["trained on"] == 0  # 12 labelled: the vote alone
    # where the misses are: counted over the same hidden products, and printed
    errors = json.loads(report.read_text())["errors"]
    assert errors["level"] == 2 and errors["misses"] == round(3 * (1 - levels["level 2"]["accuracy@1"]))
    assert sum(errors["labelled products in the true category"].values()) == errors["misses"]
    assert levels["level 2"]["unseen"] == errors["labelled products in the true category"]["0"]  # all missed
    assert f"Level 2: {errors['misses']} misses" in text


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_import_applies_confident_category_suggestions(flipkart: Path, flipkart_rows: list[dict[str, str]],
                                                       tmp_path: Path) -> None:
    """``import_catalog --categorise-above X``: a product imported without a category gets the
    one its neighbours suggest, when confident enough; below the threshold it stays without."""
    import csv

    watches = [r for r in flipkart_rows if r["image"] and r["category"].startswith("Watches > Wrist Watches")]
    mugs = [r for r in flipkart_rows if r["image"] and r["category"].startswith("Kitchen & Dining > Coffee Mugs")]
    orphan = {**watches[6], "category": ""}
    path = tmp_path / "catalog.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(orphan))
        writer.writeheader()
        for row in [*watches[:6], *mugs[:6], orphan]:
            writer.writerow({**row, "image": str(flipkart / row["image"])})
    out = StringIO()
    call_command("import_catalog", str(path), "--image-root", str(flipkart), "--categorise-above", "1.01", stdout=out)
    assert product(orphan["sku"]).category is None and "categorised 0 products" in out.getvalue()
    call_command("import_catalog", str(path), "--image-root", str(flipkart), "--categorise-above", "0.5", stdout=out)
    assert str(product(orphan["sku"]).category).startswith("Watches > Wrist Watches")
    assert "categorised 1 products" in out.getvalue()
