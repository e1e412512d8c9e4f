"""Encoders: the only modules that import torch, timm and sentence-transformers."""

from .base import Encoder, resolve_device

__all__ = ["Encoder", "resolve_device"]
