"""Models that are not the example shop's: a UUID primary key and a string primary key."""

from __future__ import annotations

import uuid

from django.db import models


class Tag(models.Model):
    name = models.CharField(max_length=60)

    def __str__(self) -> str:
        return self.name


class BlogPost(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    headline = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    published = models.BooleanField(default=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="posts")

    def __str__(self) -> str:
        return self.headline


class Recipe(models.Model):
    code = models.CharField(max_length=40, primary_key=True)
    name = models.CharField(max_length=200)
    cuisine = models.CharField(max_length=60, blank=True)

    def __str__(self) -> str:
        return self.name
