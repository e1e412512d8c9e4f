"""The admin's custom pages: the similarity explorer and index health.

Wired (with the staff login and permission checks) by ``similarity.admin.IndexStateAdmin``;
both are adapters over ``similarity.services``.

The explorer decodes photos uploaded from the web in the web process, so it guards that process:
a body longer than the limit is refused by its declared length before it is read, and one that
understates its length is cut off once the file passes the limit (``UploadLimitHandler``); a photo
is typed by its content (Pillow's detected format, whatever the file name says); and it is decoded
under ``SIMILARITY["WEB_MAX_IMAGE_PIXELS"]``, lower than the workers' limit, a JPEG at reduced scale.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from django import forms
from django.contrib.admin import AdminSite
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.views.decorators.csrf import csrf_protect
from PIL import Image, UnidentifiedImageError

from . import registry, services
from .conf import get_settings
from .encoders.image_decoding import DRAFT_FORMATS, WORKING_SIZE, open_image
from .exceptions import EncodingError
from .results import SimilarResult
from .specs import PayloadType

#: uploaded photos above this size are refused before decoding (and before being read in full)
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
#: room in the request body for the rest of the form: words, filters, CSRF token, part headers
FORM_OVERHEAD_BYTES = 64 * 1024
#: Pillow's names of the formats the explorer decodes (MPO: the multi-picture JPEG of cameras)
ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
PHOTO_TYPES = "JPEG, PNG, WebP, GIF, BMP or TIFF"
RESULT_LIMIT = 24
_MB = 1024 * 1024


def upload_limit_message(size: int | None = None, *, what: str = "upload") -> str:
    """What a person sees when ``what`` is over ``MAX_UPLOAD_BYTES`` (``size`` if known)."""
    limit = f"the limit is {MAX_UPLOAD_BYTES // _MB} MB"
    if size is None:
        return f"The {what} is too large: {limit}."
    return f"The {what} is {size / _MB:.1f} MB; {limit}."


class UploadLimitHandler(FileUploadHandler):
    """Counts the bytes of uploaded files and stops reading the request once they pass ``limit``.

    Put first in ``request.upload_handlers``; it passes every chunk on to Django's own handlers.
    ``StopUpload(connection_reset=True)`` leaves the rest of the body unread; the view then sees
    ``exceeded`` and answers 413. The declared ``Content-Length`` is checked before this, but it
    can understate the body (a chunked request under ASGI), so the bytes are counted as they come.
    """

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.exceeded = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.exceeded = True
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler (memory or temporary file) builds the uploaded file


class ExplorerForm(forms.Form):
    query = forms.CharField(
        required=False, max_length=200, label="Words",
        widget=forms.TextInput(attrs={"placeholder": "e.g. steel analog watch for men", "size": 50}),
    )
    photo = forms.FileField(
        required=False, label="or a photo",
        help_text=f"{PHOTO_TYPES}; at most {MAX_UPLOAD_BYTES // _MB} MB.",
        widget=forms.ClearableFileInput(attrs={"accept": "image/*"}),
    )
    #: the uploaded photo, decoded and validated by ``clean_photo``
    photo_image: Image.Image | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        specs = registry.specs()
        if len(specs) > 1:
            self.fields["model"] = forms.ChoiceField(
                choices=[(label, spec.model_class._meta.verbose_name_plural) for label, spec in specs.items()],
                label="Search in",
            )
        # The spec's yes/no filters ("in stock") as checkboxes: the explorer names no field itself.
        for spec in specs.values():
            for name, declared in spec.filters.items():
                if declared.type == PayloadType.BOOL and declared.relative_to is None:
                    self.fields.setdefault(
                        f"filter_{name}",
                        forms.BooleanField(required=False, label=f"{name.replace('_', ' ').capitalize()} only"),
                    )

    def search_options(self) -> dict[str, Any]:
        """``model`` and the ticked filters, as the search services take them."""
        data = self.cleaned_data
        spec = registry.get_spec(data.get("model") or next(iter(registry.specs())))
        filters = {name: True for name in spec.filters if data.get(f"filter_{name}")}
        return {"model": spec, **filters}

    def clean_photo(self) -> UploadedFile | None:
        """Type the photo by its content, then decode it under the web process's pixel limit."""
        photo: UploadedFile | None = self.cleaned_data.get("photo")
        self.photo_image = None
        if not photo:
            return photo
        if photo.size is not None and photo.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(upload_limit_message(photo.size, what="photo"))
        name = photo.name or "upload"
        (width, height), decoded = _inspect(photo, name)
        limit = get_settings().web_max_image_pixels
        if decoded[0] * decoded[1] > limit:
            raise forms.ValidationError(
                f"“{name}” is {width}×{height} pixels ({width * height / 1e6:.1f} megapixels); the "
                f"explorer reads photos of at most {limit / 1e6:g} megapixels. Upload a smaller copy."
            )
        try:
            # The same limit again, now on what is decoded (a JPEG at the scale checked above).
            self.photo_image = open_image(photo, name=name, max_pixels=limit, draft=WORKING_SIZE)
        except EncodingError as exc:
            raise forms.ValidationError(f"This file cannot be read as an image ({exc}).") from exc
        finally:
            photo.seek(0)
        return photo

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors and not data.get("query") and not data.get("photo"):
            raise forms.ValidationError("Type some words or choose a photo to search with.")
        return data


def _inspect(photo: UploadedFile, name: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The stored size of ``photo`` and the size it will be decoded at (a JPEG at reduced scale).

    Reads the header only. Raises ``ValidationError`` unless Pillow detects an allowed format.
    """
    not_a_photo = forms.ValidationError(
        f"This file cannot be read as an image: “{name}” is not a photo. Upload a {PHOTO_TYPES} file."
    )
    try:
        with warnings.catch_warnings():
            # The pixel limit is ours (WEB_MAX_IMAGE_PIXELS); Pillow's bomb warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(photo) as image:
                if image.format not in ALLOWED_FORMATS:
                    raise not_a_photo
                stored = image.size
                if image.format in DRAFT_FORMATS:
                    image.draft("RGB", (WORKING_SIZE, WORKING_SIZE))
                return stored, image.size
    except Image.DecompressionBombError as exc:
        raise forms.ValidationError(f"“{name}” has far too many pixels for the explorer ({exc}).") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise not_a_photo from exc
    finally:
        photo.seek(0)


def _as_png(image: Image.Image) -> io.BytesIO:
    # search_image decodes what it is given under the workers' limit; handing it the small decoded
    # copy keeps the full-size decode out of the web process (lossless, so the same vector).
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def _admin_change_url(site: AdminSite, obj: Any) -> str:
    opts = obj._meta
    try:
        return reverse(f"{site.name}:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return ""


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # what Django reads of such a body too


def _explorer_page(
    request: HttpRequest, site: AdminSite, form: ExplorerForm, *, status: int = 200, **context: Any,
) -> TemplateResponse:
    context = {
        **site.each_context(request),
        "title": "Similarity explorer",
        "form": form,
        "result": None,
        "hits": [],
        "mode": "",
        "upload_error": "",
        **context,
    }
    return TemplateResponse(request, "admin/similarity/explorer.html", context, status=status)


def explorer(request: HttpRequest, site: AdminSite) -> HttpResponse:
    """Search the catalog by typed words (text vectors) or an uploaded photo (image vectors).

    Route it through a view marked ``csrf_exempt``: the upload limit is an upload handler, which
    must be in place before anything reads ``request.POST``, and CSRF middleware reads it. This
    view applies ``csrf_protect`` itself once the handler is installed, as Django's docs show:
    https://docs.djangoproject.com/en/5.2/topics/http/file-uploads/#modifying-upload-handlers-on-the-fly
    """
    limiter: UploadLimitHandler | None = None
    if request.method == "POST":
        declared = _declared_length(request)
        if declared > MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES:
            # Refused by its declared length, before a byte of the body is read.
            return _explorer_page(
                request, site, ExplorerForm(), status=413, upload_error=upload_limit_message(declared)
            )
        limiter = UploadLimitHandler(request, MAX_UPLOAD_BYTES)
        # Assigned, not inserted: Django raises if the body was already parsed (no csrf_exempt).
        request.upload_handlers = [limiter, *request.upload_handlers]
    return _explorer(request, site, limiter)


@csrf_protect
def _explorer(request: HttpRequest, site: AdminSite, limiter: UploadLimitHandler | None) -> HttpResponse:
    result: SimilarResult | None = None
    mode = ""
    if request.method == "POST":
        data, files = request.POST, request.FILES  # parsed here (or by csrf_protect), with the limiter
        if limiter is not None and limiter.exceeded:
            return _explorer_page(
                request, site, ExplorerForm(), status=413, upload_error=upload_limit_message(what="photo")
            )
        form = ExplorerForm(data, files)
        if form.is_valid():
            cleaned = form.cleaned_data
            if cleaned["photo"] and form.photo_image is not None:
                mode = "photo"
                try:
                    result = services.search_image(
                        _as_png(form.photo_image), limit=RESULT_LIMIT, name=cleaned["photo"].name,
                        **form.search_options(),
                    )
                except EncodingError as exc:
                    form.add_error("photo", f"This file cannot be read as an image ({exc}).")
            else:
                mode = "words"
                result = services.search_text(cleaned["query"], limit=RESULT_LIMIT, **form.search_options())
    else:
        form = ExplorerForm()
    hits = [
        {"hit": hit, "title": registry.get_spec(type(hit.object)).get_title(hit.object),
         "change_url": _admin_change_url(site, hit.object),
         "site_url": getattr(hit.object, "get_absolute_url", lambda: "")()}
        for hit in (result or [])
    ]
    return _explorer_page(request, site, form, result=result, hits=hits, mode=mode)


def health(request: HttpRequest, site: AdminSite) -> TemplateResponse:
    """Counts per modality and status, model versions, the outbox and the latest errors."""
    sections = []
    for label in registry.specs():
        report = services.index_health(label)
        statuses = sorted({status for counts in report["counts"].values() for status in counts})
        sections.append({"label": label, "report": report, "statuses": statuses})
    context = {**site.each_context(request), "title": "Similarity index health", "sections": sections}
    return TemplateResponse(request, "admin/similarity/health.html", context)
