"""catalog.importer through ``manage.py import_catalog``: bad rows cost themselves only, images come
only from where they may, and the exit status tells a script what happened."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from catalog.importer import MAX_IMAGE_BYTES
from catalog.management.commands.import_catalog import Command
from catalog.models import Category, Product
from tests import factories

PNG = factories.png_bytes()


write_csv = factories.write_csv


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_catalog", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """As ``manage.py import_catalog ...`` runs it: the exit status, stdout and stderr."""
    code = 0
    try:
        Command().run_from_argv(["manage.py", "import_catalog", *args, "--skip-checks"])
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stored_image(sku: str) -> bytes | None:
    picture = Product.objects.get(sku=sku).images.first()
    if picture is None:
        return None
    with picture.image.open("rb") as fh:
        return fh.read()


# ---------------------------------------------------------------------------------------------
# Field size and value limits
# ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_field_over_128_kib_does_not_abort_the_import(tmp_path):
    long_text = "cotton " * 30_000  # 210 kB, over csv's default 128 KiB field limit
    path = write_csv(tmp_path, [
        {"sku": "LONG-DESC", "title": "Towel", "description": long_text},
        {"sku": "LONG-TITLE", "title": long_text},
        {"sku": "AFTER", "title": "Mat"},
    ])
    out, err = run(str(path))
    assert "Imported 2 products (2 created" in out
    assert Product.objects.get(sku="LONG-DESC").description == long_text.strip()
    assert f"row 3: title is {len(long_text.strip())} characters long, the limit is 300" in err
    assert not Product.objects.filter(sku="LONG-TITLE").exists()
    assert Product.objects.filter(sku="AFTER").exists()


@pytest.mark.django_db
def test_prices_are_checked_against_the_price_field_before_the_database(tmp_path):
    path = write_csv(tmp_path, [
        {"sku": "HUGE", "title": "a", "price": "1e309"},
        {"sku": "TOO-MANY-DIGITS", "title": "a", "price": "1e10"},
        {"sku": "NAN", "title": "a", "price": "NaN"},
        {"sku": "NEGATIVE", "title": "a", "price": "-1"},
        {"sku": "FRACTION", "title": "a", "price": "10.505"},
        {"sku": "LARGEST", "title": "a", "price": "9999999999.99"},
        {"sku": "ZEROS", "title": "a", "price": "1.50000"},
        {"sku": "NONE", "title": "a", "price": ""},
    ])
    out, err = run(str(path))
    assert "Imported 3 products" in out and "5 rows skipped" in out
    assert "row 2: bad price '1e309': more than 10 digits before the decimal point" in err
    assert "row 3: bad price '1e10': more than 10 digits before the decimal point" in err
    assert "row 4: bad price 'NaN': not a finite number" in err
    assert "row 5: bad price '-1': negative" in err
    assert "row 6: bad price '10.505': more than 2 decimal places" in err
    prices = dict(Product.objects.values_list("sku", "price"))
    assert prices == {"LARGEST": Decimal("9999999999.99"), "ZEROS": Decimal("1.50"), "NONE": None}


@pytest.mark.django_db
def test_text_over_a_model_field_limit_is_a_row_error_naming_field_and_limit(tmp_path):
    path = write_csv(tmp_path, [
        {"sku": "S" * 65, "title": "Long sku"},
        {"sku": "TITLE", "title": "t" * 100_000},
        {"sku": "BRAND", "title": "Long brand", "brand": "b" * 121},
        {"sku": "CATEGORY", "title": "Long category", "category": "Home > " + "c" * 201},
        {"sku": "NUL", "title": "Nul\x00byte"},
        {"sku": "OK", "title": "Towel", "brand": "b" * 120, "category": "Home > " + "c" * 200},
    ])
    out, err = run(str(path))
    assert "Imported 1 products" in out and "5 rows skipped" in out
    assert "row 2: sku is 65 characters long, the limit is 64" in err
    assert "row 3: title is 100000 characters long, the limit is 300" in err
    assert "row 4: brand is 121 characters long, the limit is 120" in err
    assert "row 5: category name 'cccccccccccccccccccccccccccccccccccccccc...' is 201 characters long, " \
           "the limit is 200" in err
    assert "row 6: title contains a NUL character" in err
    assert list(Product.objects.values_list("sku", flat=True)) == ["OK"]
    assert not Category.objects.filter(name="c" * 201).exists()


# ---------------------------------------------------------------------------------------------
# A database error costs one row
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def unique_titles() -> Iterator[None]:
    """A constraint the importer knows nothing of, as a shop's own migration might add."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE UNIQUE INDEX test_importer_unique_title ON catalog_product (title)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX test_importer_unique_title")


@pytest.mark.django_db(transaction=True)
def test_a_database_error_costs_that_row_only(tmp_path, dispatched, unique_titles):
    path = write_csv(tmp_path, [
        {"sku": "A", "title": "Towel", "category": "Home > Bath"},
        {"sku": "B", "title": "Towel", "category": "Garden > Fresh"},  # violates the index
        {"sku": "C", "title": "Rake", "category": "Garden > Fresh"},
        {"sku": "D", "title": "Mat", "category": "Home > Bath"},
    ])
    out, err = run(str(path), "--batch-size", "10")
    assert "Imported 3 products (3 created" in out and "1 rows skipped" in out
    assert "row 3: database error:" in err
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["A", "C", "D"]
    # The category B created went with its savepoint; C's is a real row, not a dangling id.
    assert Product.objects.get(sku="C").category.path == "Garden > Fresh"
    assert Category.objects.filter(name="Fresh").count() == 1
    assert len(dispatched) == 1, "the batch is still one transaction and one indexing batch"
    assert sorted(dispatched[0][1]) == sorted(Product.objects.values_list("pk", flat=True))


@pytest.mark.django_db(transaction=True)
def test_one_transaction_and_one_indexing_batch_per_batch_size_rows(tmp_path, dispatched, unique_titles):
    rows = [{"sku": f"S{i}", "title": f"Item {i}"} for i in range(5)]
    rows[1]["title"] = "Item 0"  # fails in the first batch
    run(str(write_csv(tmp_path, rows)), "--batch-size", "2")
    assert len(dispatched) == 3
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["S0", "S2", "S3", "S4"]


@pytest.mark.django_db
def test_the_same_sku_twice_updates_the_first(tmp_path):
    path = write_csv(tmp_path, [{"sku": "A", "title": "Towel"}, {"sku": "A", "title": "Bath towel"}])
    out, _ = run(str(path))
    assert "1 created, 1 updated, 0 unchanged" in out
    assert Product.objects.get(sku="A").title == "Bath towel"


# ---------------------------------------------------------------------------------------------
# Encodings
# ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("args", [(), ("--encoding", "utf-8"), ("--encoding", "UTF8")])
def test_utf8_with_a_bom_reads_by_default_and_with_encoding_utf8(tmp_path, args):
    path = write_csv(tmp_path, [{"sku": "A", "title": "Café crème"}], encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    run(str(path), *args)
    assert Product.objects.get(sku="A").title == "Café crème"


@pytest.mark.django_db
def test_a_file_that_does_not_decode_imports_nothing_and_names_the_line(tmp_path):
    rows = [{"sku": "A", "title": "Towel"}, {"sku": "B", "title": "Mat"}, {"sku": "C", "title": "Café"}]
    path = write_csv(tmp_path, rows, encoding="latin-1")
    with pytest.raises(CommandError) as raised:
        run(str(path), "--batch-size", "1")
    assert raised.value.returncode == 2
    message = str(raised.value)
    assert "catalog.csv is not utf-8 text: line 4 has byte 0xe9" in message
    assert "nothing was imported" in message and "--encoding" in message
    assert Product.objects.count() == 0
    run(str(path), "--encoding", "latin-1")
    assert Product.objects.get(sku="C").title == "Café"


@pytest.mark.django_db
@pytest.mark.parametrize(("filler_rows", "bom"), [(0, True), (30_000, False)])
def test_the_line_named_is_the_bad_line(tmp_path, filler_rows, bom):
    """At the start of a line after a BOM, and past the first megabyte the check reads at a time."""
    rows = [{"sku": f"S{i}", "title": f"Item {i}"} for i in range(filler_rows)]
    path = write_csv(tmp_path, rows, encoding="utf-8-sig" if bom else "utf-8")
    with open(path, "ab") as fh:
        fh.write(b"\xe9,bad\n")
    with pytest.raises(CommandError, match=f"line {filler_rows + 2} has byte 0xe9"):
        run(str(path))
    assert Product.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_bad_encoding_exits_2_without_a_traceback(tmp_path, capsys):
    path = write_csv(tmp_path, [{"sku": "A", "title": "Café"}], encoding="cp1252")
    code, _, err = run_cli(capsys, str(path))
    assert code == 2
    assert err.startswith("CommandError: catalog.csv is not utf-8 text: line 2")
    assert "Traceback" not in err
    code, _, err = run_cli(capsys, str(path), "--encoding", "no-such-codec")
    assert (code, err.strip()) == (2, "CommandError: unknown encoding 'no-such-codec'")


# ---------------------------------------------------------------------------------------------
# Images: a missing one costs the image, not the product
# ---------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_product_whose_image_is_missing_is_imported_with_a_warning(tmp_path, dispatched):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(PNG)
    path = write_csv(tmp_path, [
        {"sku": "A", "title": "Towel", "category": "Home > Bath > Towels", "price": "10.50", "image": "img/a.png"},
        {"sku": "", "title": "No sku"},
        {"sku": "E", "title": "Missing image", "image": "img/missing.jpg"},
    ])
    out, err = run(str(path))
    assert "Imported 2 products (2 created, 0 updated, 0 unchanged); 1 rows skipped; 1 warning." in out
    assert "row 3: missing sku" in err
    assert "row 4: unreadable image 'img/missing.jpg' not imported: No such file or directory" in err
    assert Product.objects.get(sku="E").images.count() == 0
    assert stored_image("A") == PNG
    assert sorted(dispatched[0][1]) == sorted(Product.objects.values_list("pk", flat=True)), \
        "the image-less product is still indexed (by its text)"


@pytest.mark.django_db
def test_an_image_that_went_missing_keeps_the_image_the_product_had(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(PNG)
    path = write_csv(tmp_path, [{"sku": "A", "title": "Towel", "image": "img/a.png"}])
    run(str(path))
    (tmp_path / "img" / "a.png").unlink()
    out, err = run(str(write_csv(tmp_path, [{"sku": "A", "title": "Bath towel", "image": "img/a.png"}])))
    assert "0 created, 1 updated" in out and "1 warning" in out
    assert "unreadable image 'img/a.png' not imported" in err
    assert Product.objects.get(sku="A").title == "Bath towel"
    assert stored_image("A") == PNG


# ---------------------------------------------------------------------------------------------
# Images: only regular files, only from the CSV's folder or an --image-root, only up to a size
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """The CSV's folder, with a picture inside and a secret file next to (outside) it."""
    folder = tmp_path / "shop"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a.png").write_bytes(PNG)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key.png").write_bytes(b"SECRET")
    return folder


@pytest.mark.django_db
def test_image_paths_outside_the_csv_folder_are_refused_and_the_products_kept(shop, tmp_path):
    (shop / "img" / "leak.png").symlink_to(tmp_path / "secret" / "key.png")
    (shop / "img" / "inside.png").symlink_to(shop / "img" / "a.png")
    path = write_csv(shop, [
        {"sku": "TRAVERSAL", "title": "a", "image": "../../../../etc/passwd"},
        {"sku": "ABSOLUTE", "title": "a", "image": "/etc/hostname"},
        {"sku": "SYMLINK", "title": "a", "image": "img/leak.png"},
        {"sku": "DEVICE", "title": "a", "image": "/dev/zero"},
        {"sku": "SIBLING", "title": "a", "image": "../secret/key.png"},
        {"sku": "INSIDE", "title": "a", "image": "img/inside.png"},
        {"sku": "PLAIN", "title": "a", "image": "img/a.png"},
    ])
    out, err = run(str(path))
    assert "Imported 7 products (7 created" in out and "0 rows skipped; 5 warnings." in out
    outside = "not imported: it is outside the CSV's folder and every --image-root"
    for number, image in enumerate(["../../../../etc/passwd", "/etc/hostname", "img/leak.png", "/dev/zero",
                                    "../secret/key.png"], start=2):
        assert f"row {number}: image {image!r} {outside}" in err
    for sku in ("TRAVERSAL", "ABSOLUTE", "SYMLINK", "DEVICE", "SIBLING"):
        assert stored_image(sku) is None
    assert stored_image("INSIDE") == PNG and stored_image("PLAIN") == PNG


@pytest.mark.django_db
def test_only_regular_files_are_read(shop):
    os.mkfifo(shop / "img" / "pipe.png")  # reading it would block forever
    path = write_csv(shop, [
        {"sku": "FIFO", "title": "a", "image": "img/pipe.png"},
        {"sku": "FOLDER", "title": "a", "image": "img"},
        {"sku": "DEVICE", "title": "a", "image": "/dev/zero"},  # inside the allowed root /dev
    ])
    out, err = run(str(path), "--image-root", "/dev")
    assert "Imported 3 products" in out
    assert "row 2: image 'img/pipe.png' not imported: not a regular file" in err
    assert "row 3: image 'img' not imported: not a regular file" in err
    assert "row 4: image '/dev/zero' not imported: not a regular file" in err
    assert not Product.objects.filter(images__isnull=False).exists()


@pytest.mark.django_db
def test_images_over_the_size_cap_are_refused(shop):
    with open(shop / "img" / "huge.png", "wb") as fh:  # sparse: no 20 MiB written
        fh.truncate(MAX_IMAGE_BYTES + 1)
    (shop / "img" / "small.png").write_bytes(b"x" * 100)
    path = write_csv(shop, [
        {"sku": "HUGE", "title": "a", "image": "img/huge.png"},
        {"sku": "A", "title": "a", "image": "img/a.png"},
    ])
    _, err = run(str(path))
    assert f"row 2: image 'img/huge.png' not imported: it is {MAX_IMAGE_BYTES + 1} bytes, over the " \
           f"{MAX_IMAGE_BYTES} byte limit (--max-image-bytes)" in err
    assert stored_image("HUGE") is None and stored_image("A") == PNG
    _, err = run(str(write_csv(shop, [{"sku": "SMALL", "title": "a", "image": "img/small.png"}])),
                 "--max-image-bytes", "99")
    assert "row 2: image 'img/small.png' not imported: it is 100 bytes, over the 99 byte limit" in err
    assert stored_image("SMALL") is None


@pytest.mark.django_db
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_the_size_cap_holds_for_a_file_whose_size_lies(shop):
    assert os.stat("/proc/self/status").st_size == 0  # yet reading it gives ~1 KiB
    path = write_csv(shop, [{"sku": "PROC", "title": "a", "image": "/proc/self/status"}])
    _, err = run(str(path), "--image-root", "/proc", "--max-image-bytes", "64")
    assert "row 2: image '/proc/self/status' not imported: it is over the 64 byte limit" in err
    assert stored_image("PROC") is None


@pytest.mark.django_db
def test_an_image_root_allows_files_under_it(shop, tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "b.png").write_bytes(PNG)
    path = write_csv(shop, [
        {"sku": "ABSOLUTE", "title": "a", "image": str(pictures / "b.png")},
        {"sku": "RELATIVE", "title": "a", "image": "../pictures/b.png"},
        {"sku": "OTHER", "title": "a", "image": "../secret/key.png"},
    ])
    out, err = run(str(path), "--image-root", str(pictures))
    assert "Imported 3 products" in out and "1 warning." in out
    assert stored_image("ABSOLUTE") == PNG and stored_image("RELATIVE") == PNG
    assert "row 4: image '../secret/key.png' not imported: it is outside" in err
    assert stored_image("OTHER") is None


# ---------------------------------------------------------------------------------------------
# Summary and exit status
# ---------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_exit_status_0_when_clean_1_on_row_problems_2_on_file_problems(tmp_path, capsys):
    clean = write_csv(tmp_path / "clean", [{"sku": "A", "title": "Towel", "price": "1"}])
    assert run_cli(capsys, str(clean))[:2] == (0, "Imported 1 products (1 created, 0 updated, 0 unchanged); "
                                                  "0 rows skipped; 0 warnings.\n")
    code, out, _ = run_cli(capsys, str(clean))
    assert (code, "0 created, 0 updated, 1 unchanged" in out) == (0, True)

    bad_row = write_csv(tmp_path / "bad-row", [{"sku": "B", "title": "Mat", "price": "-1"}])
    code, out, err = run_cli(capsys, str(bad_row))
    assert (code, "1 rows skipped" in out) == (1, True)
    assert err == "Rows skipped:\n  row 2: bad price '-1': negative\n"

    warned = write_csv(tmp_path / "warned", [{"sku": "C", "title": "Rug", "image": "nope.png"}])
    code, _, err = run_cli(capsys, str(warned))
    assert code == 1 and "Rows imported with a warning:\n  row 2: unreadable image 'nope.png'" in err
    assert Product.objects.filter(sku="C").exists()

    (tmp_path / "header.csv").write_text("name,price\nfoo,1\n")
    assert run_cli(capsys, str(tmp_path / "header.csv"))[0] == 2
    code, _, err = run_cli(capsys, str(tmp_path / "missing.csv"))
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    assert run_cli(capsys, str(clean), "--image-root", str(tmp_path / "nowhere"))[0] == 2


@pytest.mark.django_db
def test_call_command_reports_the_exit_status_without_raising(tmp_path):
    command = Command()
    path = write_csv(tmp_path, [{"sku": "A", "title": "Towel", "price": "ten"}])
    call_command(command, str(path), stdout=StringIO(), stderr=StringIO())
    assert command.exit_code == 1
    with pytest.raises(CommandError) as raised:
        call_command(Command(), str(tmp_path / "missing.csv"))
    assert raised.value.returncode == 2


@pytest.mark.django_db
def test_errors_and_warnings_are_listed_by_row_number(tmp_path):
    rows = [{"sku": f"S{i}", "title": f"Item {i}"} for i in range(4)]
    rows[0]["price"], rows[3]["price"], rows[1]["image"] = "x", "y", "gone.png"
    out, err = run(str(write_csv(tmp_path, rows)), "--batch-size", "1", "--verbosity", "0")
    assert out == ""
    assert err.splitlines() == [
        "Rows skipped:", "  row 2: bad price 'x'", "  row 5: bad price 'y'",
        "Rows imported with a warning:",
        "  row 3: unreadable image 'gone.png' not imported: No such file or directory",
    ]


def test_the_exit_status_is_what_manage_py_returns(tmp_path):
    """A real process, as a cron job would run it (no database is needed for a file problem)."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "manage.py", "import_catalog", str(tmp_path / "missing.csv"), "--skip-checks"],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"},
    )
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
