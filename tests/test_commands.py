"""Management commands: import_catalog, similarity_reindex, similar."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from catalog.models import Category, Product
from similarity import changes, registry, services
from similarity.models import IndexState, PendingChange, RebuildCheckpoint
from tests import factories

write_csv = factories.write_csv


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db(transaction=True)
def test_import_catalog_reports_bad_rows_and_imports_the_rest(tmp_path, dispatched):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(factories.png_bytes())
    path = write_csv(tmp_path, [
        {"sku": "A", "title": "Towel", "category": "Home > Bath > Towels", "price": "10.50", "image": "img/a.png"},
        {"sku": "", "title": "No sku"},
        {"sku": "C", "title": ""},
        {"sku": "D", "title": "Bad price", "price": "ten"},
        {"sku": "E", "title": "Missing image", "image": "img/missing.jpg"},
        {"sku": "F", "title": "Mat", "category": "Home > Bath > Mats", "price": ""},
    ])
    out, err = run("import_catalog", str(path), "--batch-size", "100")
    assert "Imported 3 products (3 created" in out
    assert "3 rows skipped" in out
    assert "row 3: missing sku" in err
    assert "row 4: missing title" in err
    assert "row 5: bad price 'ten'" in err
    assert "row 6: unreadable image 'img/missing.jpg'" in err
    towel = Product.objects.get(sku="A")
    assert towel.category.path == "Home > Bath > Towels"
    assert towel.images.count() == 1
    assert Product.objects.get(sku="F").price is None
    assert Category.objects.filter(name="Bath").count() == 1, "the tree is shared"
    assert len(dispatched) == 1, "one indexing batch per import batch, not one per row"
    assert sorted(dispatched[0][1]) == sorted(Product.objects.values_list("pk", flat=True))


@pytest.mark.django_db(transaction=True)
def test_import_catalog_is_idempotent_by_sku(tmp_path, dispatched):
    rows = [{"sku": f"S{i}", "title": f"Item {i}", "category": "A > B", "price": "1"} for i in range(5)]
    path = write_csv(tmp_path, rows)
    run("import_catalog", str(path), "--batch-size", "2")
    assert len(dispatched) == 3
    dispatched.clear()
    out, _ = run("import_catalog", str(path))
    assert "0 created, 0 updated, 5 unchanged" in out
    assert dispatched == [], "an unchanged re-import queues nothing"
    rows[0]["title"] = "Item zero, renamed"
    out, _ = run("import_catalog", str(write_csv(tmp_path, rows)))
    assert "0 created, 1 updated, 4 unchanged" in out
    assert Product.objects.get(sku="S0").title == "Item zero, renamed"
    assert Product.objects.count() == 5


@pytest.mark.django_db
def test_import_catalog_rejects_a_wrong_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("name,price\nfoo,1\n")
    with pytest.raises(CommandError, match="lacks the columns sku"):
        run("import_catalog", str(path))
    with pytest.raises(CommandError, match="does not exist"):
        run("import_catalog", str(tmp_path / "nope.csv"))


@pytest.mark.django_db(transaction=True)
def test_reindex_all_rebuilds_with_zero_downtime(dispatched):
    products = [factories.product(f"Cotton towel {i}", image=factories.png_bytes((i * 40, 0, 0))) for i in range(5)]
    out, _ = run("similarity_reindex", "--all", "--batch-size", "2")
    assert "indexed 5" in out and "products/s, batch size 2" in out
    live = registry.vector_index()
    first_generation = live.generation
    assert live.count() == 5
    # During the next rebuild the live generation keeps answering.
    seen_during = []
    import similarity.rebuild as svc

    real = svc.start_indexing  # each batch of the rebuild starts here

    def spying(ids, **kwargs):
        seen_during.append(services.find_similar(products[0]).status)
        return real(ids, **kwargs)

    svc.start_indexing = spying
    try:
        run("similarity_reindex", "--all", "--batch-size", "2")
    finally:
        svc.start_indexing = real
    assert seen_during and set(seen_during) == {"ok"}
    assert live.generation != first_generation
    assert live.count() == 5
    assert RebuildCheckpoint.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_reindex_all_resumes_after_interruption(dispatched):
    products = [factories.product(f"Mug {i}") for i in range(6)]
    calls = {"n": 0}
    import similarity.rebuild as svc

    real = svc.start_indexing

    def failing(ids, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # while the second batch starts: the first is written first
        return real(ids, **kwargs)

    svc.start_indexing = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            run("similarity_reindex", "--all", "--batch-size", "2")
    finally:
        svc.start_indexing = real
    checkpoint = RebuildCheckpoint.objects.get()
    assert checkpoint.last_key == str(products[1].pk)
    out, _ = run("similarity_reindex", "--all", "--batch-size", "2")
    # The resumed run fills the 4 left, then catches up with every change still pending (these
    # 6 were never processed: the dispatcher here only records), 2 of which it had filled.
    assert "indexed 6" in out, "the resumed run does only what was left, and the pending changes"
    assert registry.vector_index().count() == 6


@pytest.mark.django_db(transaction=True)
def test_a_batch_that_fails_to_be_written_stops_the_rebuild_at_it(dispatched, monkeypatch):
    """Batch 3 is already encoding when batch 2's write fails: the checkpoint stays after batch
    1, the error reaches the command, and a resumed run starts again at batch 2."""
    from similarity import indexing

    products = [factories.product(f"Jug {i}") for i in range(6)]
    real, writes = indexing._write, []

    def failing(*args, **kwargs):
        writes.append(1)
        if len(writes) == 2:
            raise RuntimeError("the disk is full")
        return real(*args, **kwargs)

    from similarity.encoders import pipeline

    cancelled = []
    real_cancel = pipeline.SubmittedBatch.cancel

    def cancel(batch):
        cancelled.append(batch)
        real_cancel(batch)

    monkeypatch.setattr(indexing, "_write", failing)
    monkeypatch.setattr(pipeline.SubmittedBatch, "cancel", cancel)
    with pytest.raises(RuntimeError, match="the disk is full"):
        run("similarity_reindex", "--all", "--batch-size", "2")
    assert len(writes) == 2, "batch 3 was started, never written"
    assert len(cancelled) == 1, "batch 3's encoding was cancelled where it had not started"
    assert RebuildCheckpoint.objects.get().last_key == str(products[1].pk)
    monkeypatch.setattr(indexing, "_write", real)
    out, _ = run("similarity_reindex", "--all", "--batch-size", "2")
    assert registry.vector_index().count() == 6 and RebuildCheckpoint.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_changes_during_a_rebuild_are_caught_up(dispatched, settings):
    a = factories.product("Lamp")
    b = factories.product("Chair")
    b_pk = b.pk
    run("similarity_reindex", "--all")
    import similarity.rebuild as svc

    real = svc.start_indexing

    def meddling(ids, **kwargs):
        result = real(ids, **kwargs)  # the batch is read; it is written later
        if not kwargs.get("settle", True) and not Product.objects.filter(title="Lamp, renamed").exists():
            # A merchant edits and deletes while the rebuild runs (and the live path handles it).
            Product.objects.filter(pk=a.pk).update(title="Lamp, renamed")
            changes.write_outbox("catalog.product", [str(a.pk)])
            services.index_products([a.pk])
            gone = b.pk
            b.delete()
            services.remove_products([gone])
        return result

    svc.start_indexing = meddling
    try:
        run("similarity_reindex", "--all", "--restart")
    finally:
        svc.start_indexing = real
    index = registry.vector_index()
    assert index.count() == 1
    spec = registry.get_spec()
    assert index.retrieve([spec.point_id(b_pk)]) == {}
    text = index.retrieve([spec.point_id(a.pk)])[spec.point_id(a.pk)].payload["text_hash"]
    assert text == IndexState.objects.get(object_id=a.pk, modality="text").content_hash


@pytest.mark.django_db(transaction=True)
def test_reindex_pending_and_failed(dispatched):
    p = factories.product("Pending towel", image=b"not an image", image_name="x.jpg")
    assert PendingChange.objects.filter(processed_at__isnull=True).count() == 1
    out, _ = run("similarity_reindex", "--pending")
    assert "indexed 1" in out and "failed text 0 / image 1" in out
    assert PendingChange.objects.filter(processed_at__isnull=True).count() == 0
    picture = p.images.get()
    from django.core.files.base import ContentFile

    picture.image.save("fixed.png", ContentFile(factories.png_bytes()), save=False)
    from django.db import connection

    with connection.cursor() as cursor:  # raw SQL: no signal, no capture; only --failed will notice
        cursor.execute(f"UPDATE {type(picture)._meta.db_table} SET image = %s WHERE id = %s",
                       [picture.image.name, picture.pk])
    out, _ = run("similarity_reindex", "--failed")
    assert "encoded text 0 / image 1" in out
    assert IndexState.objects.get(object_id=p.pk, modality="image").status == "indexed"


@pytest.mark.django_db(transaction=True)
def test_reindex_enqueue_dispatches_batches(dispatched):
    for i in range(5):
        factories.product(f"Thing {i}")
    dispatched.clear()
    run("similarity_reindex", "--pending", "--enqueue", "--batch-size", "2")
    assert [len(call[1]) for call in dispatched] == [2, 2, 1]


@pytest.mark.django_db(transaction=True)
def test_similar_command_prints_neighbours_with_scores():
    factories.product("Leather wallet for men", sku="W1", category_path="Bags > Wallets")
    factories.product("Leather wallet brown", sku="W2", category_path="Bags > Wallets", in_stock=False)
    factories.product("Garden hose 10 m", sku="H1", category_path="Garden")
    out, _ = run("similar", "W1", "--limit", "2")
    lines = out.splitlines()
    assert "Similar to Leather wallet for men (W1)" in lines[0]
    assert "W2" in lines[2] and "score" in lines[1]
    out, _ = run("similar", "W1", "--filter", "in_stock=true", "--filter", "same_category=true")
    assert "W2" not in out and "H1" not in out
    with pytest.raises(CommandError, match="no catalog.product has sku = 'NOPE'"):
        run("similar", "NOPE")


@pytest.mark.django_db(transaction=True)
def test_similar_command_on_an_unindexed_product(dispatched):
    factories.product("Lonely", sku="L1")
    services.ensure_index()
    with pytest.raises(CommandError, match="not indexed"):
        run("similar", "L1")


@pytest.mark.django_db(transaction=True)
def test_an_edit_committed_just_before_the_switch_is_in_the_new_generation(dispatched):
    """The edit commits after the catch-up pass and before the switch (the live path has not
    run it: the dispatcher only records). The final pass, under the outbox lock, applies it."""
    lamp = factories.product("Lamp")
    factories.product("Chair")
    run("similarity_reindex", "--all")
    import similarity.rebuild as rebuild

    real_hold = rebuild._hold_off_writers

    def edit_then_hold(checkpoint):
        Product.objects.filter(pk=lamp.pk).update(title="Brass desk lamp")  # commits (autocommit)
        real_hold(checkpoint)

    rebuild._hold_off_writers = edit_then_hold
    try:
        run("similarity_reindex", "--all", "--restart")
    finally:
        rebuild._hold_off_writers = real_hold
    spec = registry.get_spec()
    payload = registry.vector_index().retrieve([spec.point_id(lamp.pk)])[spec.point_id(lamp.pk)].payload
    from similarity.specs import text_hash

    assert payload["text_hash"] == text_hash(spec.get_text(Product.objects.get(pk=lamp.pk)))


@pytest.mark.django_db(transaction=True)
def test_the_outbox_purge_keeps_what_an_unfinished_rebuild_needs(dispatched):
    from datetime import timedelta

    from django.utils import timezone

    from similarity.changes import purge_outbox

    old = timezone.now() - timedelta(hours=30)
    factories.product("Lamp")
    PendingChange.objects.update(processed_at=old)
    RebuildCheckpoint.objects.create(model_label="catalog.product", generation="g", started_at=old - timedelta(hours=1))
    purge_outbox()
    assert PendingChange.objects.count() == 1, "processed after the unfinished rebuild started: kept"
    RebuildCheckpoint.objects.all().delete()
    purge_outbox()
    assert PendingChange.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_rebuilt_generation_goes_live_already_indexed(dispatched, settings):
    settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": {**settings.SIMILARITY["INDEX"], "INDEXING_THRESHOLD_KB": 1}}
    products = [factories.product(f"Lamp {n}", description="brass desk lamp") for n in range(12)]
    run("similarity_reindex", "--all")
    live = registry.vector_index()
    assert live.indexed_vectors() == 24  # text and fused (no images)
    seen_during: list[str] = []
    import similarity.rebuild as rebuild

    real_optimize = type(live).optimize

    def watching(index):
        seen_during.append(services.find_similar(products[0]).status)  # readers during the optimise
        return real_optimize(index)

    type(live).optimize = watching
    try:
        run("similarity_reindex", "--all", "--restart")
    finally:
        type(live).optimize = real_optimize
    assert rebuild  # the optimise ran inside the rebuild, before the switch
    assert seen_during == ["ok"], "the live generation answers while the new one is optimised"
    assert live.indexed_vectors() == 24, "the new generation went live with every text and fused vector in the graph"
    assert services.find_similar(products[0]).ok


def test_json_goes_to_the_file_or_to_stdout(tmp_path):
    """The ``--json FILE`` output of similarity_duplicates and similarity_suggest_categories."""
    import json

    from django.core.management.base import BaseCommand

    from similarity.management.json_output import write_json

    command = BaseCommand(stdout=StringIO())
    write_json(command, {"b": "é", "a": 1}, None, verbosity=1, summary="not shown", sort_keys=True)
    printed = command.stdout._out.getvalue()
    assert json.loads(printed) == {"a": 1, "b": "é"} and printed.index('"a"') < printed.index('"b"') and "é" in printed
    target = tmp_path / "new" / "out.json"
    command = BaseCommand(stdout=StringIO())
    write_json(command, [1, 2], target, verbosity=1, summary=f"wrote 2 to {target}")
    assert json.loads(target.read_text(encoding="utf-8")) == [1, 2]
    assert command.stdout._out.getvalue() == f"wrote 2 to {target}\n"
    command = BaseCommand(stdout=StringIO())
    write_json(command, [], target, verbosity=0, summary="quiet")
    assert command.stdout._out.getvalue() == "" and target.read_text(encoding="utf-8") == "[]\n"
