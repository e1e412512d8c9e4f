"""Safe image decoding: every odd but valid image becomes RGB; every broken one an EncodingError.

Kept free of torch so that decoding can run in DataLoader workers and in tests cheaply.
"""

from __future__ import annotations

import warnings
from typing import IO, cast

from PIL import Image, ImageOps, UnidentifiedImageError

from ..exceptions import EncodingError

#: images are shrunk to this long side before model preprocessing (saves decode time and RAM)
WORKING_SIZE = 512
#: wider/taller than this ratio → padded to a square, so the centre crop keeps the object
MAX_ASPECT = 2.0
#: formats that ``draft`` decodes at reduced scale: JPEG and the cameras' multi-picture JPEG
DRAFT_FORMATS = frozenset({"JPEG", "MPO"})


def open_image(fp: str | IO[bytes], *, name: str, max_pixels: int, draft: int | None = None) -> Image.Image:
    """Decode ``fp`` into an RGB image of at most ``WORKING_SIZE`` on the long side.

    Without ``draft`` (the workers), ``max_pixels`` caps the stored size (width × height in the
    header) and a JPEG is then decoded at the smallest DCT scale (1/2, 1/4 or 1/8) that still
    covers ``WORKING_SIZE``. With ``draft``, a JPEG is asked for that reduced scale (covering
    ``draft`` × ``draft``) *before* the check, so ``max_pixels`` caps the pixels actually decoded:
    the web process uses this to read a large camera JPEG under a low limit, since decoding it at
    1/8 scale needs 1/64 of the memory. Other formats are always checked at their stored size.

    Raises :class:`EncodingError` with a sentence a merchandiser can act on.
    """
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; Pillow's bomb warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp)
            if draft is not None and image.format in DRAFT_FORMATS:
                image.draft("RGB", (draft, draft))
            width, height = image.size
            if width * height > max_pixels:
                raise EncodingError(
                    f"{name}: image is {width}×{height} = {width * height / 1e6:.1f} megapixels, "
                    f"over the limit of {max_pixels / 1e6:.0f} megapixels"
                )
            if image.format == "JPEG":
                image.draft("RGB", (WORKING_SIZE, WORKING_SIZE))
            image.seek(0)  # animated GIF/WebP/APNG: the first frame
            image.load()
            return _normalise(image)
    except EncodingError:
        raise
    except FileNotFoundError as exc:
        raise EncodingError(f"{name}: file not found") from exc
    except UnidentifiedImageError as exc:
        raise EncodingError(f"{name}: not an image file (or a format Pillow cannot read)") from exc
    except Image.DecompressionBombError as exc:
        raise EncodingError(f"{name}: image too large ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise EncodingError(f"{name}: cannot decode image ({exc})") from exc


def _normalise(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image) or image
    image = _to_rgb(image)
    image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BICUBIC)
    width, height = image.size
    if max(width, height) > MAX_ASPECT * min(width, height):
        side = max(width, height)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image = canvas
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        # 16-bit and float greyscale: scale the actual range to 8 bits.
        image = image.convert("F") if mode != "F" else image
        low, high = cast(tuple[float, float], image.getextrema())
        scale = 255.0 / (high - low) if high > low else 1.0
        image = image.point(lambda v: (v - low) * scale).convert("L")
        mode = "L"
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in {"RGBA", "LA", "PA"} or (mode == "RGB" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode == "CMYK":
        # Pillow inverts Adobe CMYK JPEGs itself; a plain convert is right for both kinds.
        return image.convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image
