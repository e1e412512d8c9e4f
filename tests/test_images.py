"""Decoding: odd but valid images become RGB; broken ones raise a readable EncodingError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from similarity.encoders.image_decoding import WORKING_SIZE, open_image
from similarity.exceptions import EncodingError

LIMIT = 90_000_000


def _save(image: Image.Image, fmt: str, **kwargs) -> io.BytesIO:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    buf.seek(0)
    return buf


def _decode(buf: io.BytesIO | str) -> Image.Image:
    return open_image(buf, name="test-image", max_pixels=LIMIT)


def odd_images() -> dict[str, io.BytesIO]:
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    rgba.putpixel((5, 5), (0, 0, 255, 255))
    gif_frames = [Image.new("P", (20, 20), i * 40) for i in range(3)]
    gif = io.BytesIO()
    gif_frames[0].save(gif, format="GIF", save_all=True, append_images=gif_frames[1:], duration=50, loop=0)
    gif.seek(0)
    sixteen = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    return {
        "png-alpha": _save(rgba, "PNG"),
        "cmyk-jpeg": _save(Image.new("CMYK", (32, 32), (0, 200, 200, 0)), "JPEG"),
        "palette": _save(Image.new("RGB", (32, 32), (0, 128, 0)).convert("P"), "PNG"),
        "16-bit": _save(sixteen, "PNG"),
        "grayscale": _save(Image.new("L", (32, 32), 128), "JPEG"),
        "animated-gif": gif,
        "1x1": _save(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"),
        "20000x10": _save(Image.new("RGB", (20000, 10), (9, 9, 9)), "PNG"),
        "webp": _save(Image.new("RGB", (50, 40), (10, 200, 10)), "WEBP"),
    }


@pytest.mark.parametrize("kind", list(odd_images()))
def test_odd_but_valid_images_become_rgb(kind):
    image = _decode(odd_images()[kind])
    assert image.mode == "RGB"
    assert max(image.size) <= WORKING_SIZE
    width, height = image.size
    assert max(width, height) <= 2 * min(width, height), "extreme aspect ratios are padded to a square"


def test_transparent_pixels_become_white():
    image = _decode(odd_images()["png-alpha"])
    assert image.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_keeps_its_range():
    image = _decode(odd_images()["16-bit"])
    low, high = image.convert("L").getextrema()
    assert high - low > 200


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not an image"),
        (b"this is a text file, not a JPEG\n", "not an image"),
    ],
    ids=["zero-byte", "text-named-jpg"],
)
def test_broken_files_raise_readable_errors(data, message):
    with pytest.raises(EncodingError, match=message) as info:
        _decode(io.BytesIO(data))
    assert "test-image" in str(info.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(EncodingError, match="file not found"):
        _decode(str(tmp_path / "nope.jpg"))


def huge_png() -> bytes:
    """A 10000×9500 (95 MP) bilevel PNG: small on disk, over the 90 MP limit."""
    return _save(Image.new("1", (10_000, 9_500), 0), "PNG", optimize=True).getvalue()


def test_over_90_megapixels_is_refused_without_decoding():
    with pytest.raises(EncodingError, match=r"95\.0 megapixels, over the limit of 90"):
        _decode(io.BytesIO(huge_png()))


def truncated_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    data = _save(Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)), "JPEG").getvalue()
    return data[: len(data) // 2]


def test_truncated_jpeg_fails_cleanly():
    with pytest.raises(EncodingError, match="cannot decode image"):
        _decode(io.BytesIO(truncated_jpeg()))
