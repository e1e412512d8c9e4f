"""Real headless Chromium (Debian's ``chromium`` package) driven by Playwright, against
pytest-django's live server with real indexed flipkart-1050 products.

The browser is never downloaded: without /usr/bin/chromium (``apt-get install chromium``) or the
``playwright`` package these tests are skipped with that reason. A failing test leaves a
screenshot in ``test-artifacts/``. ``SAVE_DOCS_SCREENSHOTS=1`` also refreshes the README
screenshots under ``docs/``.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ARTIFACTS = Path(django_settings.BASE_DIR) / "test-artifacts"
DOCS = Path(django_settings.BASE_DIR) / "docs"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: products indexed per test: the watches the assertions are about, and the rest of the catalog
WATCHES, OTHERS_PER_CATEGORY = 14, 5


def pytest_collection_modifyitems(config: Any, items: list[pytest.Item]) -> None:
    reason = ""
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} is missing: install Debian's browser with `apt-get install -y chromium`"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is missing: `pip install -r requirements/dev.txt`"
    for item in items:
        if "browser" in item.keywords and reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread, which makes Django refuse
    # ORM calls here (test set-up included) although they are plain synchronous code.
    # https://github.com/microsoft/playwright-pytest/issues/29
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser: Any, live_server: Any, settings: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    settings.ROOT_URLCONF = "tests.browser.urls"
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    yield tab
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def _subset(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Some watches, a few products of every other top category, and held-out watches."""
    rng = random.Random(7)
    watches = [r for r in rows if r["category"].startswith("Watches") and r["image"]]
    rng.shuffle(watches)
    chosen = watches[:WATCHES]
    by_top: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        top = row["category"].split(" > ")[0]
        if top != "Watches" and row["image"]:
            by_top.setdefault(top, []).append(row)
    for group in by_top.values():
        chosen += group[:OTHERS_PER_CATEGORY]
    return chosen, watches[WATCHES:]


@pytest.fixture
def indexed_shop(flipkart: Path, flipkart_rows: list[dict[str, str]], tmp_path: Path) -> dict[str, Any]:
    """~40 flipkart-1050 products imported through the real importer; the commit indexes them."""
    from catalog.importer import import_catalog
    from catalog.models import Product
    from similarity.models import IndexState, Status

    chosen, held_out = _subset(flipkart_rows)
    csv_path = tmp_path / "subset.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(chosen[0]))
        writer.writeheader()
        for row in chosen:
            writer.writerow({**row, "image": str(flipkart / row["image"])})
    report = import_catalog(csv_path, image_roots=[flipkart])
    assert report.imported == len(chosen), report.errors
    indexed = IndexState.objects.filter(modality="image", status=Status.INDEXED).count()
    assert indexed == len(chosen), "the import's commit should have indexed every product"
    watches = list(Product.objects.filter(category__name__icontains="watches").order_by("pk"))
    probe = tmp_path / "probe-watch.jpg"
    shutil.copyfile(flipkart / held_out[0]["image"], probe)
    return {"count": len(chosen), "watches": watches, "probe_photo": probe}


@pytest.fixture
def admin_login(page: Any, django_user_model: Any) -> dict[str, str]:
    login = {"username": "merchandiser", "password": "s3cret-pw"}
    django_user_model.objects.create_superuser(email="m@example.com", **login)
    page.goto("/admin/login/")
    page.fill("#id_username", login["username"])
    page.fill("#id_password", login["password"])
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    return login


def save_docs_screenshot(target: Any, name: str, width: int = 900, **options: Any) -> None:
    """A small PNG for the README (only with SAVE_DOCS_SCREENSHOTS=1)."""
    if os.environ.get("SAVE_DOCS_SCREENSHOTS") != "1":
        return
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(target.screenshot(type="png", **options)))
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
    DOCS.mkdir(exist_ok=True)
    image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(
        DOCS / name, optimize=True
    )
