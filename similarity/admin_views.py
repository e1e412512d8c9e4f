"""The admin's custom pages: the similarity explorer and index health.

Wired (with the staff login and permission checks) by ``similarity.admin.IndexStateAdmin``;
both are adapters over ``similarity.services``.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from django import forms
from django.contrib.admin import AdminSite
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse

from . import registry, services
from .exceptions import EncodingError
from .results import SimilarResult
from .specs import PayloadType

#: uploads above this size are refused before decoding
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
ALLOWED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
RESULT_LIMIT = 24


class ExplorerForm(forms.Form):
    query = forms.CharField(
        required=False, max_length=200, label="Words",
        widget=forms.TextInput(attrs={"placeholder": "e.g. steel analog watch for men", "size": 50}),
    )
    photo = forms.FileField(
        required=False, label="or a photo",
        help_text=f"JPEG, PNG, WebP, GIF, BMP or TIFF; at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.",
        widget=forms.ClearableFileInput(attrs={"accept": "image/*"}),
    )

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

    def clean_photo(self) -> Any:
        photo = self.cleaned_data.get("photo")
        if not photo:
            return photo
        if photo.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                f"The photo is {photo.size / (1024 * 1024):.1f} MB; the limit is "
                f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
            )
        if PurePath(photo.name).suffix.lower() not in ALLOWED_EXTENSIONS:
            raise forms.ValidationError(
                f"“{photo.name}” is not a photo: upload a JPEG, PNG, WebP, GIF, BMP or TIFF file."
            )
        return photo

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors and not data.get("query") and not data.get("photo"):
            raise forms.ValidationError("Type some words or choose a photo to search with.")
        return data


def _admin_change_url(site: AdminSite, obj: Any) -> str:
    opts = obj._meta
    try:
        return reverse(f"{site.name}:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return ""


def explorer(request: HttpRequest, site: AdminSite) -> TemplateResponse:
    """Search the catalog by typed words (text vectors) or an uploaded photo (image vectors)."""
    result: SimilarResult | None = None
    mode = ""
    if request.method == "POST":
        form = ExplorerForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            if data["photo"]:
                mode = "photo"
                try:
                    result = services.search_image(
                        data["photo"], limit=RESULT_LIMIT, name=data["photo"].name, **form.search_options()
                    )
                except EncodingError as exc:
                    form.add_error("photo", f"This file cannot be read as an image ({exc}).")
            else:
                mode = "words"
                result = services.search_text(data["query"], limit=RESULT_LIMIT, **form.search_options())
    else:
        form = ExplorerForm()
    hits = [
        {"hit": hit, "title": registry.get_spec(type(hit.object)).get_title(hit.object),
         "change_url": _admin_change_url(site, hit.object),
         "site_url": getattr(hit.object, "get_absolute_url", lambda: "")()}
        for hit in (result or [])
    ]
    context = {
        **site.each_context(request),
        "title": "Similarity explorer",
        "form": form,
        "result": result,
        "hits": hits,
        "mode": mode,
    }
    return TemplateResponse(request, "admin/similarity/explorer.html", context)


def health(request: HttpRequest, site: AdminSite) -> TemplateResponse:
    """Counts per modality and status, model versions, the outbox and the latest errors."""
    sections = []
    for label in registry.specs():
        report = services.index_health(label)
        statuses = sorted({status for counts in report["counts"].values() for status in counts})
        sections.append({"label": label, "report": report, "statuses": statuses})
    context = {**site.each_context(request), "title": "Similarity index health", "sections": sections}
    return TemplateResponse(request, "admin/similarity/health.html", context)
