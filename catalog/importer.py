"""Load the canonical catalog CSV: ``sku,title,description,brand,category,price,image``.

A bad row costs that row only: values are checked against the model's limits before they reach
the database, and each row runs in its own savepoint inside the batch's transaction. Images are
read only from the CSV's folder or an allowed root, only from regular files, and only up to a
size cap; a product whose image cannot be taken is imported without it, with a warning.
Problems with the file as a whole raise :class:`CatalogFormatError` before anything is written.
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.db import DatabaseError, models, transaction
from django.utils.text import slugify

from .models import Category, Product, ProductImage

REQUIRED_COLUMNS = ("sku", "title", "description", "brand", "category", "price", "image")
#: the largest image file read by default (``--max-image-bytes`` changes it)
MAX_IMAGE_BYTES = 20 * 1024 * 1024
# csv refuses fields over 128 KiB by default; a long description is still a valid row. 2**31 - 1
# is a C long everywhere (Windows' long is 32 bits, so sys.maxsize would overflow there).
_CSV_FIELD_LIMIT = 2**31 - 1
_READ_CHUNK = 1024 * 1024
# Opening a FIFO swapped in after the checks must not block; a symlink swapped in must not be followed.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)

Outcome = Literal["created", "updated", "unchanged"]


class CatalogFormatError(ValueError):
    """The file is not in the canonical format at all (not a row-level problem)."""


class CatalogEncodingError(CatalogFormatError):
    """The file does not decode with the encoding it was read with."""


class RowError(ValueError):
    """One row cannot be imported; the message says why."""


class ImageRefused(Exception):
    """An image path that the import will not read; the message says why."""


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    #: (row number, reason) of the rows that were not imported
    errors: list[tuple[int, str]] = field(default_factory=list)
    #: (row number, problem) for rows imported with a problem (an image left out)
    warnings: list[tuple[int, str]] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def clean(self) -> bool:
        return not self.errors and not self.warnings

    def count(self, outcome: Outcome) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def merge(self, other: ImportReport) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.errors += other.errors
        self.warnings += other.warnings


@dataclass
class _Row:
    number: int
    sku: str
    title: str
    description: str
    brand: str
    category: tuple[str, ...]
    price: Decimal | None
    image: str
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------------------------
def _codec(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise CatalogFormatError(f"unknown encoding {encoding!r}") from None
    # A BOM is what Excel writes at the start of "CSV UTF-8"; it is not part of the header.
    return "utf-8-sig" if name == "utf-8" else name


def _check_decodes(path: Path, codec: str, encoding: str) -> None:
    """Decode the whole file once before importing, so a bad byte imports nothing."""
    # Plain utf-8 for the check: utf-8-sig shifts error offsets by the BOM it strips (a BOM is valid utf-8).
    decoder = codecs.getincrementaldecoder("utf-8" if codec == "utf-8-sig" else codec)()
    lines_before = 0
    with open(path, "rb") as fh:
        for chunk in iter(functools.partial(fh.read, _READ_CHUNK), b""):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line = lines_before + (pending + chunk)[: exc.start].count(b"\n") + 1
                raise _decode_error(path, encoding, line, exc, "nothing was imported") from None
            lines_before += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise _decode_error(path, encoding, lines_before + 1, exc, "nothing was imported") from None


def _decode_error(path: Path, encoding: str, line: int, exc: UnicodeDecodeError,
                  consequence: str) -> CatalogEncodingError:
    byte = exc.object[exc.start : exc.start + 1].hex()
    return CatalogEncodingError(f"{path.name} is not {encoding} text: line {line} has byte 0x{byte} "
                                f"({exc.reason}); {consequence}")


def _rows(path: Path, codec: str, encoding: str) -> Iterator[tuple[int, dict[str, Any]]]:
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    with open(path, newline="", encoding=codec) as fh:
        reader = csv.DictReader(fh)
        try:
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise CatalogFormatError(f"{path} lacks the columns {', '.join(missing)}; the header must be "
                                         f"{','.join(REQUIRED_COLUMNS)}")
            yield from enumerate(reader, start=2)  # row 1 is the header
        except UnicodeDecodeError as exc:  # the file changed after _check_decodes
            raise _decode_error(path, encoding, reader.line_num + 1, exc,
                                "the batches before it were imported") from None
        except csv.Error as exc:
            raise CatalogFormatError(f"{path.name} line {reader.line_num}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Checking a row against the model's limits
# ---------------------------------------------------------------------------------------------
def _text(raw: dict[str, Any], column: str) -> str:
    value = raw.get(column)
    text = value.strip() if isinstance(value, str) else ""
    if "\x00" in text:  # PostgreSQL cannot store it, SQLite can: refuse it everywhere
        raise RowError(f"{column} contains a NUL character")
    return text


def _check_length(label: str, value: str, model: type[models.Model], field_name: str) -> None:
    limit = getattr(model._meta.get_field(field_name), "max_length", None)
    if limit is not None and len(value) > limit:
        raise RowError(f"{label} is {len(value)} characters long, the limit is {limit}")


def _category_names(path_text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in path_text.split(">") if part.strip())


def _parse_category(text: str) -> tuple[str, ...]:
    names = _category_names(text)
    for name in names:
        shown = name if len(name) <= 40 else f"{name[:40]}..."
        _check_length(f"category name {shown!r}", name, Category, "name")
    return names


def _parse_price(text: str) -> Decimal | None:
    if not text:
        return None
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise RowError(f"bad price {text!r}") from None
    price_field = Product._meta.get_field("price")
    max_digits, places = price_field.max_digits, price_field.decimal_places
    if not price.is_finite():
        raise RowError(f"bad price {text!r}: not a finite number")
    if price < 0:
        raise RowError(f"bad price {text!r}: negative")
    whole_digits = max_digits - places
    if price and price.adjusted() >= whole_digits:
        raise RowError(f"bad price {text!r}: more than {whole_digits} digits before the decimal point")
    rounded = price.quantize(Decimal(1).scaleb(-places), context=Context(prec=max_digits))
    if rounded != price:
        raise RowError(f"bad price {text!r}: more than {places} decimal places")
    return rounded


def _parse(number: int, raw: dict[str, Any]) -> _Row:
    values = {column: _text(raw, column) for column in REQUIRED_COLUMNS}
    if not values["sku"]:
        raise RowError("missing sku")
    if not values["title"]:
        raise RowError("missing title")
    for column in ("sku", "title", "description", "brand"):
        _check_length(column, values[column], Product, column)
    return _Row(number, values["sku"], values["title"], values["description"], values["brand"],
                _parse_category(values["category"]), _parse_price(values["price"]), values["image"])


# ---------------------------------------------------------------------------------------------
# Images: confined to allowed folders, regular files, capped in size
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageFiles:
    """Where a catalog's images may come from: relative paths start in ``base`` (the CSV's folder);
    whatever a path resolves to (symlinks followed) must lie under one of ``roots``."""

    base: Path
    roots: tuple[Path, ...]
    max_bytes: int = MAX_IMAGE_BYTES

    @classmethod
    def for_csv(cls, csv_path: Path, image_roots: Iterable[str | Path] = (),
                max_bytes: int = MAX_IMAGE_BYTES) -> ImageFiles:
        base = csv_path.parent.resolve()
        return cls(base, (base, *(Path(root).resolve() for root in image_roots)), max_bytes)

    def read(self, text: str) -> tuple[str, bytes]:
        """The file's name and bytes; ImageRefused or OSError says why not."""
        try:
            path = (self.base / text).resolve()
        except RuntimeError:  # Python < 3.13 raises it for a symlink loop
            raise ImageRefused("it is a symlink loop") from None
        if not any(path.is_relative_to(root) for root in self.roots):
            raise ImageRefused("it is outside the CSV's folder and every --image-root")
        self._check(os.stat(path))
        with os.fdopen(os.open(path, _OPEN_FLAGS), "rb") as fh:
            self._check(os.fstat(fh.fileno()))  # the same file the checks above saw
            data = fh.read(self.max_bytes + 1)  # st_size can lie (/proc) or grow meanwhile
        if len(data) > self.max_bytes:
            raise ImageRefused(f"it is over the {self.max_bytes} byte limit (--max-image-bytes)")
        return path.name, data

    def _check(self, info: os.stat_result) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise ImageRefused("not a regular file")
        if info.st_size > self.max_bytes:
            raise ImageRefused(f"it is {info.st_size} bytes, over the {self.max_bytes} byte limit "
                               "(--max-image-bytes)")


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
class CategoryCache:
    """Creates category paths (``A > B > C``) once per import."""

    def __init__(self) -> None:
        self._by_path: dict[tuple[str, ...], Category] = {}

    def get(self, path_text: str | tuple[str, ...]) -> Category | None:
        names = _category_names(path_text) if isinstance(path_text, str) else path_text
        if not names:
            return None
        parent: Category | None = None
        for depth in range(1, len(names) + 1):
            key = names[:depth]
            if key not in self._by_path:
                name = names[depth - 1]
                slug = slugify(name)[:200] or "category"
                category, _ = Category.objects.get_or_create(parent=parent, slug=slug, defaults={"name": name})
                self._by_path[key] = category
            parent = self._by_path[key]
        return parent

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """``transaction.atomic()`` whose rollback also forgets the categories created inside it
        (a later row must not point at a row that no longer exists)."""
        known = dict(self._by_path)
        try:
            with transaction.atomic():
                yield
        except BaseException:
            self._by_path = known
            raise


class _ProductsBySku:
    """A batch's existing products, loaded in one query; a failed row's product is reloaded."""

    def __init__(self, skus: list[str]) -> None:
        self._known: dict[str, Product | None] = dict.fromkeys(skus)
        self._known.update((p.sku, p) for p in Product.objects.filter(sku__in=skus))

    def get(self, sku: str) -> Product | None:
        if sku not in self._known:
            self._known[sku] = Product.objects.filter(sku=sku).first()
        return self._known[sku]

    def remember(self, product: Product) -> None:
        self._known[product.sku] = product

    def forget(self, sku: str) -> None:
        self._known.pop(sku, None)


def import_catalog(
    path: str | Path, *, batch_size: int = 200, encoding: str = "utf-8",
    image_roots: Iterable[str | Path] = (), max_image_bytes: int = MAX_IMAGE_BYTES,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Create or update products by sku; one transaction (and one indexing batch) per batch.

    Image paths may point into the CSV's folder or into one of ``image_roots``."""
    path = Path(path)
    if not path.is_file():
        raise CatalogFormatError(f"{path} does not exist or is not a file")
    codec = _codec(encoding)
    _check_decodes(path, codec, encoding)
    images = ImageFiles.for_csv(path, image_roots, max_image_bytes)
    report = ImportReport()
    categories = CategoryCache()
    batch: list[tuple[int, dict[str, Any]]] = []
    for item in _rows(path, codec, encoding):
        batch.append(item)
        if len(batch) >= batch_size:
            _import_batch(batch, images, categories, report)
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        _import_batch(batch, images, categories, report)
        if progress:
            progress(len(batch))
    return report


def _import_batch(batch: list[tuple[int, dict[str, Any]]], images: ImageFiles, categories: CategoryCache,
                  report: ImportReport) -> None:
    parsed: list[_Row] = []
    for number, raw in batch:
        try:
            parsed.append(_parse(number, raw))
        except RowError as exc:
            report.errors.append((number, str(exc)))
    done = ImportReport()  # counted only once the batch has committed
    with categories.atomic():
        products = _ProductsBySku([row.sku for row in parsed])
        for row in parsed:
            _import_row(row, products, images, categories, done)
    report.merge(done)


def _import_row(row: _Row, products: _ProductsBySku, images: ImageFiles, categories: CategoryCache,
                report: ImportReport) -> None:
    try:
        with categories.atomic():  # a savepoint: a database error here costs this row only
            outcome, product = _upsert(row, products.get(row.sku), images, categories)
    except DatabaseError as exc:
        products.forget(row.sku)
        report.errors.append((row.number, f"database error: {' '.join(str(exc).split())}"))
        return
    products.remember(product)
    report.count(outcome)
    report.warnings += [(row.number, warning) for warning in row.warnings]


def _upsert(row: _Row, product: Product | None, images: ImageFiles,
            categories: CategoryCache) -> tuple[Outcome, Product]:
    category = categories.get(row.category)
    values: dict[str, Any] = {
        "title": row.title, "description": row.description, "brand": row.brand,
        "category_id": category.pk if category else None, "price": row.price,
    }
    if product is None:
        product = Product.objects.create(sku=row.sku, **values)
        _sync_image(product, row, images)
        return "created", product
    changed = any(getattr(product, key) != value for key, value in values.items())
    if changed:
        for key, value in values.items():
            setattr(product, key, value)
        product.save()
    image_changed = _sync_image(product, row, images)
    return ("updated" if changed or image_changed else "unchanged"), product


def _sync_image(product: Product, row: _Row, images: ImageFiles) -> bool:
    """Make the product's images match the row; True when they changed. An image that cannot be
    taken leaves the product's current images as they are."""
    current = list(product.images.all())
    if not row.image:
        _delete_images(current)
        return bool(current)
    try:
        name, data = images.read(row.image)
    except ImageRefused as exc:
        row.warnings.append(f"image {row.image!r} not imported: {exc}")
        return False
    except OSError as exc:
        row.warnings.append(f"unreadable image {row.image!r} not imported: {exc.strerror or exc}")
        return False
    if len(current) == 1 and _stored_digest(current[0]) == hashlib.sha256(data).hexdigest():
        return False
    try:
        _store_image(product, name, data)
    except (OSError, SuspiciousFileOperation) as exc:
        row.warnings.append(f"image {row.image!r} not imported: it could not be stored ({exc})")
        return False
    _delete_images(current)
    return True


def _stored_digest(picture: ProductImage) -> str | None:
    try:
        with picture.image.open("rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def _store_image(product: Product, name: str, data: bytes) -> None:
    picture = ProductImage(product=product, position=0)
    picture.image.save(name, ContentFile(data), save=False)
    try:
        picture.save()
    except DatabaseError:
        picture.image.delete(save=False)
        raise


def _delete_images(pictures: list[ProductImage]) -> None:
    for picture in pictures:
        picture.delete()
        # The file goes only once the rows are gone for good: a rolled-back row keeps its image.
        transaction.on_commit(functools.partial(picture.image.storage.delete, str(picture.image.name)))
