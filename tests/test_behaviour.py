"""Behaviour: events, training, the widgets and their evaluation — on real online-retail baskets,
real Qdrant Edge, the real text encoder and the real ``implicit`` library."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.template import Context, Template
from django.test import RequestFactory

from similarity import services
from similarity.behaviour.artifacts import behaviour_index, live_artifact
from similarity.behaviour.models import BehaviourModel, Event, EventKind

from . import behaviour_data, factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    cache.clear()


def _need_retail() -> None:
    if not (behaviour_data.RETAIL / "transactions.csv").is_file():
        pytest.skip("../shared/datasets/online-retail is not present")


@pytest.fixture
def retail(tmp_path: Path) -> dict[str, Any]:
    """Products (content indexed) and event files."""
    _need_retail()
    return behaviour_data.build(tmp_path)


@pytest.fixture
def retail_events(tmp_path: Path) -> dict[str, Any]:
    """Products (not in the content index) and event files: for what content plays no part in."""
    _need_retail()
    return behaviour_data.build(tmp_path, index=False)


def run(*args: Any) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


@pytest.fixture
def trained(retail: dict[str, Any]) -> dict[str, Any]:
    run("import_events", str(retail["train"]), "--columns", behaviour_data.COLUMNS)
    run("similarity_train", "--behaviour", "--algorithm", "ease")
    return retail


def co_bought(retail: dict[str, Any]) -> tuple[Any, list[Any]]:
    """The most sold product and the products bought in the same orders most often."""
    from collections import Counter

    rows = Event.objects.values_list("order", "object_id")
    orders: dict[str, set[str]] = {}
    for order, key in rows:
        orders.setdefault(order, set()).add(key)
    anchor = retail["products"][retail["skus"][0]]
    pairs = Counter(k for items in orders.values() if str(anchor.pk) in items for k in items)
    pairs.pop(str(anchor.pk), None)
    return anchor, [int(k) for k, _n in pairs.most_common(10)]


def test_import_events_reads_the_dataset_format_reports_bad_rows_and_is_idempotent(
    retail_events: dict[str, Any], tmp_path: Path,
) -> None:
    retail = retail_events
    path = retail["train"]
    lines = path.read_text().splitlines()
    lines += ["999999,NO-SUCH-SKU,1,2010-12-14T10:00:00Z,1.00,1,United Kingdom",
              f"999999,{retail['skus'][0]},1,yesterday,1.00,1,United Kingdom"]
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(lines) + "\n")
    out = run("import_events", str(broken), "--columns", behaviour_data.COLUMNS)
    created = Event.objects.count()
    assert created > 1000
    assert f"row {len(lines) - 1}: unknown sku 'NO-SUCH-SKU'" in out
    assert f"row {len(lines)}: time 'yesterday' is neither ISO 8601 nor epoch seconds" in out
    assert "1 unknown skus, 1 bad rows" in out
    event = Event.objects.filter(order="536365").first()
    assert event is not None and event.kind == EventKind.PURCHASE and event.visitor == "17850"
    assert event.object_id == str(retail["products"][event_sku(event, retail)].pk)

    again = run("import_events", str(broken), "--columns", behaviour_data.COLUMNS)
    assert Event.objects.count() == created
    assert "0 new events" in again


def event_sku(event: Event, retail: dict[str, Any]) -> str:
    return next(sku for sku, p in retail["products"].items() if str(p.pk) == event.object_id)


def test_import_events_canonical_header_epoch_times_and_views(tmp_path: Path) -> None:
    mug = factories.product("Mug", sku="MUG-1")
    path = tmp_path / "events.csv"
    path.write_text("time,visitor,session,sku,event\n1291190400,v1,s1,MUG-1,\n1291190460,v1,s1,MUG-1,cart\n")
    run("import_events", str(path))
    kinds = sorted(Event.objects.values_list("kind", flat=True))
    assert kinds == ["cart", "view"]
    assert Event.objects.get(kind="view").time.isoformat() == "2010-12-01T08:00:00+00:00"
    assert Event.objects.get(kind="view").object_id == str(mug.pk)


def test_record_purchase_is_idempotent_per_order_and_item() -> None:
    a, b = factories.product("A"), factories.product("B")
    assert services.record_purchase("A-1", [a, (b, 2, "3.50")]) == 2
    assert services.record_purchase("A-1", [a, (b, 2, "3.50")]) == 0
    line = Event.objects.get(object_id=str(b.pk))
    assert (line.kind, line.order, line.quantity, str(line.price)) == ("purchase", "A-1", 2, "3.50")


def test_view_hook_keeps_recent_views_per_session(client: Any) -> None:
    """The session's first view, the later ones in the views cache (tests/test_view_hook.py)."""
    first, second = factories.product("First"), factories.product("Second")
    client.get(first.get_absolute_url())
    client.get(second.get_absolute_url())
    client.get(first.get_absolute_url())
    assert [key for key, _t in services.recent_views(client.session)] == [str(second.pk), str(first.pk)]
    assert set(client.cookies) == {"sessionid"}  # Django's session cookie, nothing of ours
    assert Event.objects.count() == 0


def test_record_views_middleware_records_only_pages_that_succeeded() -> None:
    from django.contrib.sessions.backends.db import SessionStore
    from django.http import HttpResponse

    from similarity.behaviour.recording import RecordViewsMiddleware

    shown, failed = factories.product("Shown"), factories.product("Failed")
    request = RequestFactory().get("/")
    request.session = SessionStore()
    for obj, status in ((shown, 200), (failed, 500)):
        request.similarity_viewed = obj  # type: ignore[attr-defined]
        RecordViewsMiddleware(lambda r, status=status: HttpResponse(status=status))(request)
    assert services.recent_views(request) == [(str(shown.pk), pytest.approx(time.time(), abs=5))]


def test_training_chooses_by_held_out_baskets_and_goes_live(retail_events: dict[str, Any]) -> None:
    trained = retail_events
    run("import_events", str(trained["train"]), "--columns", behaviour_data.COLUMNS)
    out = run("similarity_train", "--behaviour")
    row = BehaviourModel.objects.get(live=True)
    assert set(row.metrics) == {"cosine", "ease", "als"}
    best = max(row.metrics, key=lambda a: (row.metrics[a]["hit@10"], row.metrics[a]["mrr"]))
    assert row.algorithm == best
    assert Path(row.path).is_file()
    artifact = live_artifact()
    assert artifact is not None and artifact.transitions is not None and artifact.transitions.nnz > 0
    # recommended_for_you's mix: chosen on the same held-out cut, the best of its grid, live with the model
    chosen = row.params["recent_views"]
    assert chosen["positions"] >= 30 and len(chosen["grid"]) == 15
    assert [chosen["hit@10"], chosen["mrr"]] == pytest.approx(max(chosen["grid"].values()), abs=1e-4)
    assert (artifact.mix.cooccurrence, artifact.mix.recency) == (chosen["cooccurrence"], chosen["recency"])
    # ... and the command says which mix it chose, and how it scored
    assert (f"recent views: bought-together weight {chosen['cooccurrence']:g}, recency {chosen['recency']:g} "
            f"(hit@10 {chosen['hit@10']:.4f}, mrr {chosen['mrr']:.4f} on {chosen['positions']} held-out next items"
            in out)
    index = behaviour_index()
    assert index.count() == row.items == len(trained["skus"])
    anchor = trained["products"][trained["skus"][0]]
    point = index.retrieve([_point(anchor)])[_point(anchor)]
    assert point.payload["in_stock"] and point.payload["history"] > 0

    # the implicit library's ALS, asked for by name, trains and serves too
    out = run("similarity_train", "--behaviour", "--algorithm", "als")
    assert "live now" in out and "(als," in out
    assert BehaviourModel.objects.get(live=True).algorithm == "als"
    result = services.bought_together(anchor, limit=5)
    assert result.ok and len(result.hits) == 5 and anchor.pk not in [h.pk for h in result.hits]


def _point(obj: Any) -> str:
    from similarity import registry

    return registry.get_spec(type(obj)).point_id(obj.pk)


def test_bought_together_serves_complements_and_applies_spec_filters(retail_events: dict[str, Any]) -> None:
    retail = retail_events
    run("import_events", str(retail["train"]), "--columns", behaviour_data.COLUMNS)
    anchor, partners = co_bought(retail)
    gone = factories.Product.objects.get(pk=partners[0])
    gone.in_stock = False
    gone.save()
    services.train_behaviour(algorithm="ease")

    plain = [h.pk for h in services.bought_together(anchor, limit=8).hits]
    assert anchor.pk not in plain
    assert len(set(plain) & set(partners)) >= 4  # real complements: bought in the same orders
    in_stock = [h.pk for h in services.bought_together(anchor, limit=8, in_stock=True).hits]
    assert gone.pk not in in_stock and len(in_stock) == 8
    same = services.bought_together(anchor, limit=8, same_category=True).hits
    assert same and all(h.object.category_id == anchor.category_id for h in same)


def test_widgets_on_pages_new_products_and_evaluation(trained: dict[str, Any], client: Any, tmp_path: Path) -> None:
    products = trained["products"]
    # a product without any history: content neighbours alone
    cold = products[trained["cold"][0]]
    artifact = live_artifact()
    assert artifact is not None and str(cold.pk) not in artifact.position
    result = services.bought_together(cold, limit=5)
    assert [h.pk for h in result.hits] == [h.pk for h in services.find_similar(cold, limit=5).hits]

    # the cart widget never shows what is in the cart
    cart = [products[sku] for sku in trained["skus"][:3]]
    html = Template("{% load similarity %}{% bought_together_cart cart limit=6 %}").render(Context({"cart": cart}))
    assert html.count("data-similar-card") == 6 and 'data-widget="bought_together_cart"' in html
    assert not any(f'data-pk="{p.pk}"' in html for p in cart)

    # a new visitor: recommended = trending (the sensible fallback)
    request = RequestFactory().get("/")
    request.session = {}  # type: ignore[assignment]
    html = Template("{% load similarity %}{% recommended_for_you %}").render(Context({"request": request}))
    trending = services.trending(limit=8)
    assert trending.hits and all(f'data-pk="{h.pk}"' in html for h in trending.hits)

    # after three product pages: recommended from them, never the product being viewed
    seen = [products[sku] for sku in trained["skus"][5:8]]
    for product in seen:
        response = client.get(product.get_absolute_url())
    page = response.content.decode()
    assert 'data-widget="bought_together"' in page
    section = page.split('data-widget="recommended_for_you"', 1)[1].split("</section>", 1)[0]
    assert f'data-pk="{seen[-1].pk}"' not in section and section.count("data-similar-card") == 8
    expected = services.recommended_from_views(
        factories.Product, [str(p.pk) for p in seen], current=seen[-1], limit=8)  # type: ignore[arg-type]
    assert all(f'data-pk="{h.pk}"' in section for h in expected.hits)

    # the evaluation of both tasks on the later events, served widgets included
    out_json = tmp_path / "basket.json"
    out = run("similarity_evaluate", "--task", "basket", "--events", str(trained["later"]),
              "--columns", behaviour_data.COLUMNS, "--k", "10", "--sample", "60", "--json", str(out_json))
    metrics = json.loads(out_json.read_text())
    assert set(metrics) >= {"bought_together", "behaviour", "cosine", "cooccurrence", "popularity", "content"}
    assert metrics["bought_together"]["hit@10"] > metrics["popularity"]["hit@10"]
    assert "bought_together" in out
    nxt = tmp_path / "next.json"
    run("similarity_evaluate", "--task", "next-item", "--events", str(trained["later"]),
        "--columns", behaviour_data.COLUMNS, "--sample", "60", "--json", str(nxt))
    metrics = json.loads(nxt.read_text())
    assert set(metrics) >= {"recommended_for_you", "transitions", "cooccurrence", "popularity", "content"}
    assert 0 < metrics["recommended_for_you"]["hit@10"] <= 1
    low, high = metrics["recommended_for_you"]["ci95"]["hit@10"]
    assert low <= metrics["recommended_for_you"]["hit@10"] <= high
    difference = metrics["transitions"]["served_minus_this"]["hit@10"]
    assert difference[0] == pytest.approx(metrics["recommended_for_you"]["hit@10"] - metrics["transitions"]["hit@10"])
    assert difference[1] <= difference[2]


def test_trending_decays_with_time_and_filters_by_category(retail_events: dict[str, Any]) -> None:
    from django.conf import settings

    from similarity import tasks
    from similarity.behaviour.trending import trending_scores

    run("import_events", str(retail_events["train"]), "--columns", behaviour_data.COLUMNS)
    # the daily beat task trains every spec and makes the result live
    beat = settings.CELERY_BEAT_SCHEDULE["similarity-train-behaviour"]
    assert beat["task"] == tasks.train_behaviour.name
    assert tasks.train_behaviour.delay().get()["catalog.product"]["items"] == len(retail_events["skus"])
    scores = trending_scores()
    newest = Event.objects.latest("time").time
    recent = {e.object_id for e in Event.objects.filter(time__gte=newest.replace(hour=0, minute=0))}
    assert max(scores, key=scores.__getitem__) in recent  # decay: the last day weighs most
    top = services.trending(limit=5).hits
    assert [str(h.pk) for h in top] == sorted(scores, key=lambda k: -scores[k])[:5]
    some = retail_events["products"][retail_events["skus"][1]]
    in_category = services.trending(limit=5, category=some.category_id).hits
    assert len(in_category) == 5 and all(h.object.category_id == some.category_id for h in in_category)
    html = Template("{% load similarity %}{% trending cat %}").render(Context({"cat": some.category_id}))
    assert all(f'data-pk="{h.pk}"' in html for h in in_category)


def test_beacon_counts_impressions_and_clicks_and_admin_shows_ctr(admin_client: Any, client: Any) -> None:
    for event in ("i", "i", "i", "i", "c"):
        assert client.post(f"/similarity/beacon?w=bought_together&p=product&e={event}").status_code == 204
    assert client.post("/similarity/beacon?w=nope&p=x&e=i").status_code == 400
    assert client.get("/similarity/beacon?w=trending&e=i").status_code == 405
    page = admin_client.get("/admin/similarity/widgetstat/").content.decode()
    assert "bought_together" in page and "25%" in page


def test_paired_bootstrap_of_the_difference_is_seeded_and_resamples_groups() -> None:
    from similarity.behaviour.evaluation import Scores

    def scores() -> Scores:
        result = Scores(k=2)
        for case in range(40):
            result.start(group=f"session-{case // 4}")  # 10 sessions of 4 positions
            result.add("served", ["a", "b"], "a" if case % 2 else "b")  # always a hit (rank 1 or 2)
            result.add("same", ["a", "b"], "a" if case % 2 else "b")
            result.add("never", ["x"], "a")
            result.add("half", ["a"], "a" if case < 20 else "z")  # the first 5 sessions only
        return result

    table = scores().table(served="served", seed=3)
    assert table == scores().table(served="served", seed=3)  # seeded
    assert table["served"]["hit@2"] == 1.0 and table["served"]["ci95"]["hit@2"] == [1.0, 1.0]
    assert table["never"]["served_minus_this"]["hit@2"] == [1.0, 1.0, 1.0]
    assert table["same"]["served_minus_this"]["mrr"] == [0.0, 0.0, 0.0]
    diff, low, high = table["half"]["served_minus_this"]["hit@2"]
    # sessions are resampled whole: the interval is that of 10 sessions, not 40 positions
    assert diff == 0.5 and low < 0.3 and high > 0.7
    assert "served_minus_this" not in table["served"]


def _day(n: int) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime(2011, 1, 1, tzinfo=UTC) + timedelta(days=n)


def test_recent_views_mix_is_chosen_by_the_next_items_after_the_cut() -> None:
    import numpy as np

    from similarity.behaviour import algorithms
    from similarity.behaviour.train import choose_mix

    def visitors(pattern: list[int], count: int, day: int) -> list[list[tuple[int, Any]]]:
        return [[(item, _day(day)) for item in pattern] for _n in range(count)]

    # after 0, visitors mostly view 1 and sometimes 4; "bought together" ranks 4 first for 0,
    # 1 and 2: weighed as much as the transitions, it would put 4 before the real next item
    before = visitors([0, 1, 2, 3], 8, 1) + visitors([0, 4], 3, 1) + visitors([1, 4], 3, 1) + visitors([2, 4], 3, 1)
    after = visitors([0, 1, 2, 3], 20, 30)
    neighbours = algorithms.neighbour_matrix(np.array([[4], [4], [4], [4], [0]]), np.ones((5, 1), np.float32))
    mix, report = choose_mix(before + after, _day(30), neighbours, k=1)
    assert mix.cooccurrence < 0.5 and report["hit@1"] == 1.0 and report["positions"] == 60
    assert report["grid"]["1/0.5"][0] < 1.0  # the old fixed mix misses some of them

    # items whose next item has no transitions before the cut: only "bought together" knows them
    before = visitors([0, 1], 6, 1)
    after = visitors([2, 3], 40, 30)
    neighbours = algorithms.neighbour_matrix(np.array([[1], [0], [3], [2]]), np.ones((4, 1), np.float32))
    mix, report = choose_mix(before + after, _day(30), neighbours)
    assert mix.cooccurrence > 0 and report["hit@10"] == 1.0
    assert report["grid"]["0/0.1"] == [0.0, 0.0]

    # too little after the cut: the defaults, unmeasured
    assert choose_mix(before + visitors([2, 3], 1, 30), _day(30), neighbours) == (algorithms.Mix(), {})


def test_the_training_report_names_an_unmeasured_or_missing_mix() -> None:
    from similarity.behaviour.report import mix_line

    assert mix_line({"recent_views": {"cooccurrence": 1.0, "recency": 0.5}}) == (
        "recent views: bought-together weight 1, recency 0.5 (the defaults: too little held-out data to choose a mix)")
    assert mix_line({"alpha": 1.0}) == "recent views: the default mix (this model stores none)"


def test_artifacts_without_a_validated_mix_serve_as_before(tmp_path: Path) -> None:
    import numpy as np

    from similarity.behaviour import algorithms
    from similarity.behaviour.artifacts import load, save

    old = tmp_path / "old.npz"
    arrays = {"keys": np.array(["1", "2", "3"]), "counts": np.ones(3, np.float32), "popularity": np.ones(3, np.float32),
              "idx": np.array([[1], [2], [0]], np.int32), "val": np.ones((3, 1), np.float32),
              "tidx": np.array([[2], [0], [1]], np.int32), "tval": np.ones((3, 1), np.float32)}
    np.savez_compressed(old, **arrays)  # the format before the mix was stored
    artifact = load(BehaviourModel(version="old", path=str(old)))
    assert artifact.mix == algorithms.Mix(cooccurrence=1.0, recency=0.5)
    assert artifact.mix.weights(3) == [0.25, 0.5, 1.0]
    # each part scaled to 1 and added: both the next item (3) and the one bought with it (2)
    scores = algorithms.sequence_scores(artifact.neighbours, artifact.transitions, [0], [1.0],
                                        artifact.mix.cooccurrence)
    assert scores.tolist() == [0.0, 1.0, 1.0]

    new = tmp_path / "new.npz"
    save(new, keys=["1", "2", "3"], counts=arrays["counts"], idx=arrays["idx"], val=arrays["val"],
         popularity=arrays["popularity"], tidx=arrays["tidx"], tval=arrays["tval"], mix=algorithms.Mix(0.0, 0.25))
    artifact = load(BehaviourModel(version="new", path=str(new)))
    assert artifact.mix == algorithms.Mix(0.0, 0.25)
    scores = algorithms.sequence_scores(artifact.neighbours, artifact.transitions, [0], [1.0],
                                        artifact.mix.cooccurrence)
    assert scores.tolist() == [0.0, 0.0, 1.0]  # the next item alone
