"""Plant duplicate listings in a catalog CSV, to measure duplicate detection.

    python -m bench.plant_duplicates ../shared/datasets/flipkart-1050/catalog.csv /tmp/planted \
        [--count 100] [--seed 0]

Writes ``OUT/catalog.csv`` (copies of ``count`` seeded products, with new SKUs, in the
``import_catalog`` format, photos under ``OUT/images/``) and ``OUT/planted.csv``
(``sku_a,sku_b,edit``: the original and its copy). Each copy's photo is re-encoded as a
low-quality JPEG, resized, or cropped (by turns), and its title edited the way a reseller does:
words reordered, a seller's word added, a word dropped, or the case changed. Import the copies
(``manage.py import_catalog OUT/catalog.csv``) next to the originals, then run
``manage.py similarity_evaluate --task duplicates --planted OUT/planted.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from pathlib import Path

from PIL import Image

PHOTO_EDITS = ("reencode", "resize", "crop")
TITLE_EDITS = ("reorder", "add", "drop", "case")
SELLER_WORDS = ("Original", "New", "Genuine", "Best Quality", "Combo", "Latest")


def edit_photo(data: bytes, how: str, rng: random.Random) -> bytes:
    with Image.open(io.BytesIO(data)) as source:
        image = source.convert("RGB")
    if how == "resize":
        scale = rng.uniform(0.5, 0.8)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    elif how == "crop":
        share = rng.uniform(0.05, 0.12)  # off each side
        dx, dy = round(image.width * share), round(image.height * share)
        image = image.crop((dx, dy, image.width - dx, image.height - dy))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=rng.randint(35, 60) if how == "reencode" else 85)
    return out.getvalue()


def edit_title(title: str, how: str, rng: random.Random) -> str:
    words = title.split()
    if how == "reorder" and len(words) > 2:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif how == "add":
        words.insert(rng.randrange(len(words) + 1), rng.choice(SELLER_WORDS))
    elif how == "drop" and len(words) > 3:
        del words[rng.randrange(1, len(words))]
    elif how == "case":
        return title.upper() if rng.random() < 0.5 else title.title()
    return " ".join(words)


def plant(source: Path, out: Path, *, count: int = 100, seed: int = 0) -> list[dict[str, str]]:
    """Write the copies and the planted pairs; the pairs as rows."""
    rng = random.Random(seed)
    with open(source, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = [row for row in reader if row.get("image")]
    chosen = rng.sample(rows, min(count, len(rows)))
    (out / "images").mkdir(parents=True, exist_ok=True)
    copies, planted = [], []
    for n, row in enumerate(chosen):
        photo_edit, title_edit = PHOTO_EDITS[n % len(PHOTO_EDITS)], rng.choice(TITLE_EDITS)
        sku = f"DUP-{n:04d}-{row['sku'][:12]}"
        image = out / "images" / f"{sku}.jpg"
        image.write_bytes(edit_photo((source.parent / row["image"]).read_bytes(), photo_edit, rng))
        copies.append({**row, "sku": sku, "title": edit_title(row["title"], title_edit, rng),
                       "image": f"images/{image.name}"})
        planted.append({"sku_a": row["sku"], "sku_b": sku, "edit": f"{photo_edit}+{title_edit}"})
    with open(out / "catalog.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(copies)
    with open(out / "planted.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["sku_a", "sku_b", "edit"])
        writer.writeheader()
        writer.writerows(planted)
    return planted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a catalog CSV (image paths relative to it)")
    parser.add_argument("out", type=Path, help="folder for catalog.csv, planted.csv and images/")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    planted = plant(args.source, args.out, count=args.count, seed=args.seed)
    print(f"planted {len(planted)} copies in {args.out}")


if __name__ == "__main__":
    main()
