"""The ``Encoder`` protocol and what every encoder shares (device choice, versions)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """Turns a batch of inputs into L2-normalised float32 vectors, one row per input."""

    name: str
    dim: int

    @property
    def version(self) -> str: ...

    def encode(self, batch: list[Any]) -> np.ndarray: ...


class LazyModel:
    """Loads ``self._load()`` on first use of ``model``, once, even with several threads."""

    def __init__(
        self, name: str, *, device: str, batch_size: int, half_precision: bool, cpu_batch_size: int = 8
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        self.cpu_batch_size = cpu_batch_size
        self._device_setting = device
        self._half = half_precision
        self._model: Any = None
        self._version: str | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> Any:
        raise NotImplementedError

    @property
    def device_name(self) -> str:
        raise NotImplementedError

    @property
    def micro_batch(self) -> int:
        """Rows per forward pass: ``batch_size`` on a GPU; on a CPU at most ``cpu_batch_size``,
        because large batches run slower there (flipkart-1050, 2 cores: EfficientNet-Lite0
        84 images/s at 8 vs 45 at 32; MiniLM 50 texts/s at 8 vs 43 at 32)."""
        self.model  # noqa: B018 - the device is known once the model is loaded
        if self.device_name.startswith("cuda"):
            return self.batch_size
        return max(1, min(self.batch_size, self.cpu_batch_size))


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when a GPU is visible, else CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from ..exceptions import SimilarityConfigError

        raise SimilarityConfigError(f"SIMILARITY['DEVICE'] is {device!r} but no CUDA GPU is visible.")
    return device


def file_digest(paths: list[Path]) -> str:
    """A short digest of weight files, so a changed checkpoint changes the model version."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:12]


def state_dict_digest(module: Any) -> str:
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)
