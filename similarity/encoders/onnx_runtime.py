"""The encoders' forward passes on ONNX Runtime, on a CPU.

The same weights, exported in memory from the loaded torch model when the encoder is first
used (nothing downloaded: ``torch.onnx.export`` of the model already in memory), and
checked against the torch model on a probe input before it is used: a model whose export
fails, or whose output differs (cosine < :data:`MIN_COSINE`), keeps running on torch, with a
warning. The vectors equal torch's to float rounding, so the model version does not change
(measured on flipkart-1050: min cosine 0.9999998 over 64 texts and 64 images). Nothing is
downloaded; the int8 quantiser writes its output to a temporary folder, removed at once.

Why: on the 2-core bench machine, one thread, CPU ms per item, EfficientNet-Lite0 12.4 against
28.6 for the frozen TorchScript model, MiniLM-L6 27.9 against 37.3 (docs/benchmarks.md,
"Indexing throughput"). ONNX Runtime's graph optimisations fuse the depthwise convolutions'
blocks and the attention, which torch's CPU kernels run op by op.

One session per model; ``InferenceSession.run`` is thread-safe. Each session may use every core
this process may use, and its idle threads sleep rather than spin: the pipeline runs the two
models side by side (encoders/pipeline.py), and the text model, the slower one, takes the core
the image model leaves idle (`similarity_reindex --all`, float32 text, with the rebuild's overlap:
31.1–33.3 products/s; one thread per model, before the overlap: 27.7; docs/benchmarks.md).
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: below this cosine between torch's and ONNX Runtime's output on the probe input, the model
#: stays on torch
MIN_COSINE = 0.9999
#: the same bar for an int8 copy, against torch's float32 output
MIN_COSINE_INT8 = 0.95
OPSET = 17
#: one export at a time in a process (the text and image models may start together)
_EXPORTING = threading.Lock()


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def session(model_bytes: bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    # idle threads sleep instead of spinning: the other model's thread needs the core
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def export(module: Any, inputs: tuple[Any, ...], names: Sequence[str], dynamic: dict[str, dict[int, str]]) -> bytes:
    """``module`` (a torch module on the CPU, eval mode) as ONNX bytes; inputs ``names``, one
    output ``"out"``, the axes in ``dynamic`` left free."""
    import torch

    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow it froze
        torch.onnx.export(module, inputs, buffer,  # type: ignore[arg-type]  # a file object works too
                          input_names=list(names), output_names=["out"],
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def _quiet_quantizer(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Please consider to run pre-processing")


def quantize_int8(model_bytes: bytes) -> bytes:
    """Dynamic int8 quantisation of an exported model: int8 weights per output channel (per
    channel, one text per pass: min cosine to float32 0.992 on 64 flipkart-1050 texts, against
    0.902 for torch's per-tensor ``quantize_dynamic``), activations quantised per pass."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="similarity-onnx-") as folder:
        out = Path(folder) / "int8.onnx"
        root = logging.getLogger()
        root.addFilter(_quiet_quantizer)  # its advice to pre-process, logged on the root logger
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(onnx.load_from_string(model_bytes), out, per_channel=True,
                                 weight_type=QuantType.QInt8)
        finally:
            root.removeFilter(_quiet_quantizer)
        return out.read_bytes()


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    dots = np.sum(a * b, axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(dots / np.maximum(norms, 1e-12)))


class OnnxRunner:
    """Runs an exported model: ``runner(*arrays) -> np.ndarray`` (the first output)."""

    def __init__(self, model_bytes: bytes, names: Sequence[str], threads: int) -> None:
        self.names = list(names)
        self.threads = threads
        self._session = session(model_bytes, threads)

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        feed = {name: np.ascontiguousarray(a) for name, a in zip(self.names, arrays, strict=True)}
        return np.asarray(self._session.run(None, feed)[0])


def build(what: str, module: Any, probe: tuple[Any, ...], names: Sequence[str], dynamic: dict[str, dict[int, str]],
          check: Callable[[OnnxRunner], tuple[np.ndarray, np.ndarray]], *, int8: bool = False) -> OnnxRunner | None:
    """Export ``module`` (traced on ``probe``, torch tensors; ``int8``: then :func:`quantize_int8`),
    make its session and check it: ``check(runner)`` gives (the runner's vectors, torch's float32
    vectors) for the same probe input, which must agree within :data:`MIN_COSINE` (an int8
    copy: :data:`MIN_COSINE_INT8`). None, with a warning, when any step fails: the caller
    keeps torch."""
    if not available():
        return None
    from .pipeline import usable_cores

    threads = usable_cores()
    level = logging.ERROR if int8 else logging.WARNING  # int8: torch's is another model (version)
    try:
        with _EXPORTING:  # torch's exporter and the warnings filters are process-wide state
            exported = export(module, probe, names, dynamic)
            runner = OnnxRunner(quantize_int8(exported) if int8 else exported, names, threads)
        cosine = _min_cosine(*check(runner))
    except Exception as exc:  # an exporter or runtime error of any kind: torch still works
        logger.log(level, "%s: cannot run on ONNX Runtime (%s); running on torch", what, exc)
        return None
    if cosine < (MIN_COSINE_INT8 if int8 else MIN_COSINE):
        logger.log(level, "%s: ONNX Runtime's output differs from torch's (cosine %.6f); running on torch",
                   what, cosine)
        return None
    logger.info("%s: running on ONNX Runtime (%d thread(s); cosine to torch %.7f)", what, threads, cosine)
    return runner
