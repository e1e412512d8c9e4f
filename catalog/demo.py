"""A small generated catalog for when the flipkart-1050 data set is not around.

Products are drawn from a few families (watches, mugs, towels, lamps...) with simple drawn
images, so that both encoders have something real to tell apart.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw

FAMILIES = {
    "Watches > Wrist Watches > Analog": ("analog wrist watch", "steel case, leather strap, water resistant", "circle"),
    "Kitchen & Dining > Mugs > Coffee Mugs": (
        "ceramic coffee mug", "350 ml, dishwasher safe, printed handle mug", "mug"),
    "Home Furnishing > Bath Linen > Towels": (
        "cotton bath towel", "soft absorbent 500 GSM towel, machine washable", "stripes"),
    "Home Decor > Lighting > Table Lamps": ("table lamp", "bedside lamp with fabric shade and E27 holder", "lamp"),
    "Computers > Accessories > Mouse": ("wireless optical mouse", "2.4 GHz, 1600 DPI, ambidextrous mouse", "ellipse"),
}
COLOURS = {"red": (200, 40, 40), "blue": (40, 70, 200), "green": (40, 160, 70), "black": (30, 30, 30),
           "gold": (200, 160, 40)}
BRANDS = ["Acme", "Nova", "Orbit", "Zenith"]


def _draw(shape: str, colour: tuple[int, int, int], rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (256, 256), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    jitter = rng.randint(-10, 10)
    if shape == "circle":
        draw.ellipse((60 + jitter, 60, 196 + jitter, 196), outline=colour, width=14)
        draw.line((128 + jitter, 128, 128 + jitter, 80), fill=colour, width=6)
        draw.rectangle((110 + jitter, 20, 146 + jitter, 60), fill=(90, 60, 40))
        draw.rectangle((110 + jitter, 196, 146 + jitter, 236), fill=(90, 60, 40))
    elif shape == "mug":
        draw.rectangle((70, 70 + jitter, 170, 200), fill=colour)
        draw.arc((150, 100, 210, 170), -90, 90, fill=colour, width=12)
    elif shape == "stripes":
        for i in range(0, 256, 32):
            draw.rectangle((0, i + jitter, 256, i + 16 + jitter), fill=colour)
    elif shape == "lamp":
        draw.polygon([(80, 60), (176, 60), (200, 140), (56, 140)], fill=colour)
        draw.rectangle((122, 140, 134, 210), fill=(60, 60, 60))
        draw.rectangle((90, 210, 166, 225), fill=(60, 60, 60))
    else:
        draw.ellipse((88 + jitter, 50, 168 + jitter, 206), fill=colour)
        draw.line((128 + jitter, 50, 128 + jitter, 110), fill=(250, 250, 250), width=4)
    return image


def generate(folder: Path, per_family: int = 12, seed: int = 7) -> Path:
    """Write ``catalog.csv`` and ``images/`` into ``folder``; returns the CSV path."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for family, (noun, details, shape) in FAMILIES.items():
        for i in range(per_family):
            colour = rng.choice(list(COLOURS))
            brand = rng.choice(BRANDS)
            sku = f"DEMO-{shape[:3].upper()}-{i:03d}"
            image_name = f"images/{sku}.jpg"
            _draw(shape, COLOURS[colour], rng).save(folder / image_name, quality=90)
            rows.append({
                "sku": sku, "title": f"{brand} {colour} {noun}", "brand": brand,
                "description": f"{brand} {noun} in {colour}: {details}.", "category": family,
                "price": f"{rng.randint(199, 4999)}.00", "image": image_name,
            })
    path = folder / "catalog.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["sku", "title", "description", "brand", "category", "price", "image"])
        writer.writeheader()
        writer.writerows(rows)
    return path
