"""Cached thumbnails, so pages never ship full-size product photos.

A thumbnail is written once next to the media (``thumbs/<size>/<hash>.webp`` in the image's own
storage) and reused while the source keeps its name and modification time; no database rows are
involved, so a page of cards costs file-system checks, not queries. Decoding goes through
:func:`similarity.encoders.image_decoding.open_image`, which already turns every odd but valid image
(CMYK, palette, 16-bit, alpha...) into RGB and refuses oversized or broken files.
"""

from __future__ import annotations

import hashlib
import io
import logging
from typing import Any

from django.core.files.base import ContentFile
from PIL import Image

from .conf import get_settings
from .encoders.image_decoding import open_image
from .exceptions import EncodingError

logger = logging.getLogger(__name__)

#: the long side, in pixels, of the sizes pages ask for (anything else is rounded up to these)
SIZES = (160, 240, 480)
QUALITY = 80


def _fit(size: int) -> int:
    return next((s for s in SIZES if s >= size), SIZES[-1])


def thumbnail_name(name: str, size: int, stamp: str = "") -> str:
    digest = hashlib.sha1(f"{name}|{stamp}".encode(), usedforsecurity=False).hexdigest()
    return f"thumbs/{size}/{digest[:2]}/{digest[2:20]}.webp"


def thumbnail_url(field_file: Any, size: int = 240) -> str:
    """The URL of a WebP thumbnail of ``field_file`` (a ``FieldFile``) at most ``size`` pixels
    on its long side, made on first use. Returns ``""`` (and logs a warning) when the source
    is missing or not a usable image, so a page shows a placeholder instead of failing."""
    if not field_file or not getattr(field_file, "name", ""):
        return ""
    storage, name, size = field_file.storage, field_file.name, _fit(size)
    try:
        stamp = storage.get_modified_time(name).isoformat()
    except NotImplementedError:  # a remote storage without mtimes: the name alone
        stamp = ""
    except OSError:
        logger.warning("thumbnail of %s: the image file is missing", name)
        return ""
    target = thumbnail_name(name, size, stamp)
    if not storage.exists(target):
        try:
            with storage.open(name, "rb") as fh:
                image = open_image(fh, name=name, max_pixels=get_settings().max_image_pixels)
        except (EncodingError, OSError) as exc:
            logger.warning("thumbnail of %s: %s", name, exc)
            return ""
        if max(image.size) > size:
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=QUALITY, method=4)
        # Two requests may race to make the same thumbnail; the loser's copy gets another name
        # and is simply unused, so no lock is needed.
        target = storage.save(target, ContentFile(buffer.getvalue()))
    return str(storage.url(target))
