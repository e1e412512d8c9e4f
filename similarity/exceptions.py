"""The small exception hierarchy every layer raises."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class SimilarityError(Exception):
    """Base class of every error this app raises on purpose."""


class EncodingError(SimilarityError):
    """One input could not be encoded (broken image, unreadable file). Not retryable."""


class IndexUnavailable(SimilarityError):
    """The vector store cannot be reached or opened right now. Retryable."""


class SimilarityConfigError(ImproperlyConfigured, SimilarityError):
    """The ``SIMILARITY`` setting is wrong."""


class DispatchError(SimilarityError):
    """Changes could not be handed to the task queue (the broker is down); they stay in the outbox."""
