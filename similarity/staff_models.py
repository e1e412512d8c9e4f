"""What shop staff decide: duplicate reviews, pins, blocks and merchandising rules.

Keys are the spec's object keys (``IndexSpec.object_key``), like the index state, so any primary
key type works and nothing here names the example shop's models. Imported by
:mod:`similarity.models`.
"""

from __future__ import annotations

from django.db import models

OBJECT_KEY_LENGTH = 255


class DuplicateCandidate(models.Model):
    """A pair that may be the same listing twice, and what staff decided about it.

    ``object_a < object_b`` (as stored keys), so a pair has one row whichever way it was found; a
    decided pair is never reopened by a later scan (dismissed stays dismissed)."""

    class Decision(models.TextChoices):
        OPEN = "open", "To review"
        CONFIRMED = "confirmed", "Confirmed duplicate"
        DISMISSED = "dismissed", "Not a duplicate"
        VARIANTS = "variants", "Linked as variants"

    model_label = models.CharField(max_length=100)
    object_a = models.CharField(max_length=OBJECT_KEY_LENGTH)
    object_b = models.CharField(max_length=OBJECT_KEY_LENGTH)
    #: the spec's lookup values (SKUs in the example shop), for people
    name_a = models.CharField(max_length=300, blank=True)
    name_b = models.CharField(max_length=300, blank=True)
    score = models.FloatField(default=0)
    reasons = models.JSONField(default=list)
    decision = models.CharField(max_length=10, choices=Decision.choices, default=Decision.OPEN, db_index=True)
    found_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_label", "object_a", "object_b"], name="uniq_duplicate_pair")
        ]
        ordering = ["-score", "pk"]
        verbose_name = "duplicate candidate"

    def __str__(self) -> str:
        return f"{self.name_a or self.object_a} ≈ {self.name_b or self.object_b} ({self.score:.2f})"


class Pin(models.Model):
    """``target`` shown at ``position`` (0 = first) in ``source``'s similar list."""

    model_label = models.CharField(max_length=100)
    source = models.CharField(max_length=OBJECT_KEY_LENGTH, db_index=True)
    target = models.CharField(max_length=OBJECT_KEY_LENGTH)
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model_label", "source", "target"], name="uniq_pin")]
        ordering = ["position", "pk"]

    def __str__(self) -> str:
        return f"pin {self.target} at {self.position} for {self.source}"


class Block(models.Model):
    """``target`` never shown in ``source``'s similar list."""

    model_label = models.CharField(max_length=100)
    source = models.CharField(max_length=OBJECT_KEY_LENGTH, db_index=True)
    target = models.CharField(max_length=OBJECT_KEY_LENGTH)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model_label", "source", "target"], name="uniq_block")]

    def __str__(self) -> str:
        return f"block {self.target} for {self.source}"


class MerchandisingRule(models.Model):
    """A rule over every list of a model.

    ``exclude_category``: objects whose taxonomy (``spec.get_taxonomy``) contains ``other`` are
    never shown with an object whose taxonomy contains ``value``, nor the other way round.
    ``boost``: hits whose payload field ``field`` equals ``value`` get ``amount`` added to their
    score; with ``value`` empty, ``amount`` times the field's number (a margin, a rating).
    """

    class Kind(models.TextChoices):
        EXCLUDE_CATEGORY = "exclude_category", "Never show category A with category B"
        BOOST = "boost", "Boost by a payload field"

    model_label = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    field = models.CharField(max_length=100, blank=True, help_text="boost: the spec's payload field")
    value = models.CharField(max_length=200, blank=True, help_text="exclude: category A; boost: the value to match")
    other = models.CharField(max_length=200, blank=True, help_text="exclude: category B")
    amount = models.FloatField(default=0.05, help_text="boost: added to the score")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["pk"]
        verbose_name = "merchandising rule"

    def __str__(self) -> str:
        if self.kind == self.Kind.EXCLUDE_CATEGORY:
            return f"never show {self.value} with {self.other}"
        return f"boost {self.field}={self.value or '*'} by {self.amount:+g}"


class MerchandisingVersion(models.Model):
    """One row: a token that changes with every save or delete of a pin, block or rule.

    The storefront's cached lists and each process's copy of the rules are keyed by it. It lives
    in the database so every process sees a change (a process-local cache such as the default
    ``LocMemCache`` cannot share it); a shared cache (Redis) keeps a copy so a render need not
    read the database (:func:`similarity.merchandising.version`)."""

    token = models.CharField(max_length=32)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "merchandising version"

    def __str__(self) -> str:
        return self.token
