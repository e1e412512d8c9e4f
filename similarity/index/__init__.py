"""Vector stores: one module per implementation of :class:`~similarity.index.base.VectorIndex`."""

from .base import Hit, PointData, SearchFilter, VectorIndex

__all__ = ["Hit", "PointData", "SearchFilter", "VectorIndex"]
