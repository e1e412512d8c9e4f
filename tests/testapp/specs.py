"""Specs for the test app's models: what a shop with its own models writes."""

from __future__ import annotations

from typing import Any

from similarity.specs import Filter, IndexSpec, PayloadType


class BlogPostSpec(IndexSpec):
    model = "testapp.BlogPost"
    filters = {"published": Filter("published", PayloadType.BOOL)}

    def get_text(self, obj: Any) -> str:
        tags = ", ".join(sorted(tag.name for tag in obj.tags.all()))
        return f"{obj.headline}. {obj.body}" + (f" Tags: {tags}" if tags else "")

    def get_payload(self, obj: Any) -> dict[str, Any]:
        return {"published": obj.published, "tags": sorted(tag.name for tag in obj.tags.all())}


class RecipeSpec(IndexSpec):
    model = "testapp.Recipe"
    lookup_field = "code"
    filters = {"cuisine": Filter("cuisine", PayloadType.KEYWORD)}

    def get_text(self, obj: Any) -> str:
        return f"{obj.name} ({obj.cuisine})"

    def get_payload(self, obj: Any) -> dict[str, Any]:
        return {"cuisine": obj.cuisine}
