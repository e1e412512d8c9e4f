"""The encode pipeline and the CPU levers (ONNX Runtime, frozen image model, int8 text model), on
the real models with the offline weights."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from similarity import registry
from similarity.encoders import pipeline
from similarity.encoders.pipeline import encode_batch, model_threads
from similarity.encoders.text_model import SentenceTransformerTextEncoder
from tests import factories
from tests.test_images import truncated_jpeg

TEXTS = ["red cotton bath towel", "analog wrist watch with leather strap", "ceramic coffee mug",
         "blue denim jeans for men", "stainless steel water bottle"]


def _images() -> list[tuple[int, str, bytes]]:
    return [
        (0, "red.png", factories.png_bytes((200, 0, 0), (90, 60))),
        (1, "broken.jpg", truncated_jpeg()),
        (1, "blue.png", factories.png_bytes((0, 0, 200), (64, 64))),
        (2, "green.png", factories.png_bytes((0, 200, 0), (40, 80))),
    ]


def _base_image_encoder():
    return registry.base_image_encoder()


@pytest.mark.parametrize("cores, split", [(1, (1, 1)), (2, (1, 1)), (3, (1, 2)), (16, (8, 8))])
def test_model_threads_split_the_cores_between_the_two_models(cores, split):
    assert model_threads(cores) == split


def test_pipeline_gives_what_the_plain_steps_give(monkeypatch):
    """Overlapped in threads or one step after the other: the same vectors, the same errors
    for the same owners (a broken image next to a good one of the same product)."""
    text, image = registry.text_encoder(), registry.image_encoder()
    image.micro_batch  # noqa: B018 - loads the model
    monkeypatch.setattr(pipeline, "CONCURRENT", False)
    plain = encode_batch(text, TEXTS, image, _images(), max_pixels=10**8)
    monkeypatch.setattr(pipeline, "CONCURRENT", True)
    overlapped = encode_batch(text, TEXTS, image, _images(), max_pixels=10**8)

    assert plain.text is not None and overlapped.text is not None
    np.testing.assert_allclose(overlapped.text, plain.text, atol=1e-5)
    assert [owner for owner, _v in overlapped.images] == [owner for owner, _v in plain.images] == [0, 1, 2]
    for (_o, got), (_p, want) in zip(overlapped.images, plain.images, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert [owner for owner, _e in overlapped.errors] == [1]
    assert "broken.jpg" in overlapped.errors[0][1] and overlapped.errors == plain.errors


def test_pipeline_with_only_texts_or_only_images():
    text, image = registry.text_encoder(), registry.image_encoder()
    only_texts = encode_batch(text, TEXTS[:2], image, [], max_pixels=10**8)
    assert only_texts.text is not None and only_texts.text.shape == (2, 384) and only_texts.images == []
    only_images = encode_batch(text, [], image, _images()[:1], max_pixels=10**8)
    assert only_images.text is None and len(only_images.images) == 1


def test_model_threads_do_not_change_the_callers_torch_threads():
    """Each model thread sets its own intra-op threads; the calling thread and threads started
    later keep the process's setting."""
    before = torch.get_num_threads()
    encode_batch(registry.text_encoder(), TEXTS[:1], registry.image_encoder(), _images()[:1], max_pixels=10**8)
    assert torch.get_num_threads() == before
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(torch.get_num_threads).result() == before
    names = {thread.name.split("_")[0] for thread in threading.enumerate()}
    if _base_image_encoder().device_name == "cpu":
        assert {"similarity-text", "similarity-image"} <= names


@pytest.mark.slow
def test_frozen_cpu_image_model_matches_the_eager_one(monkeypatch):
    encoder = _base_image_encoder()
    if encoder.device_name != "cpu":
        pytest.skip("the frozen copy is for CPU inference")
    tensors = [encoder.preprocess(img) for img in _decoded()]
    monkeypatch.setattr(encoder, "optimise", False)
    eager = encoder.encode_tensors(tensors)
    monkeypatch.setattr(encoder, "optimise", True)
    monkeypatch.setattr(encoder, "onnx", False)  # the frozen TorchScript copy, not ONNX Runtime's
    assert encoder.runner is not encoder.model, "the frozen copy was made"
    frozen = encoder.encode_tensors(tensors)
    one = encoder.encode_tensors(tensors[:1])  # another batch size through the same trace
    assert np.min(np.sum(eager * frozen, axis=1)) > 0.9999
    np.testing.assert_allclose(one[0], frozen[0], atol=1e-4)


def _decoded():
    import io

    from similarity.encoders.image_decoding import open_image

    return [open_image(io.BytesIO(data), name=name, max_pixels=10**8)
            for _owner, name, data in _images() if name != "broken.jpg"]


@pytest.mark.slow
def test_int8_text_models_are_other_versions_and_keep_the_meaning():
    """The default on a CPU: ONNX Runtime's per-channel int8 copy, close to float32 (min cosine
    0.99 on flipkart-1050); torch's per-tensor one where ONNX Runtime is off. Each its own
    version, so the index re-encodes every text when the setting changes."""
    fp32 = SentenceTransformerTextEncoder(device="cpu", quantization="")
    int8 = SentenceTransformerTextEncoder(device="cpu", quantization="int8")
    torch_int8 = SentenceTransformerTextEncoder(device="cpu", quantization="int8", onnx=False)
    assert int8.onnx_runner is not None and torch_int8.onnx_runner is None
    assert int8.version == f"{fp32.version}+int8-onnx" and torch_int8.version == f"{fp32.version}+int8"
    a, b, c = fp32.encode(TEXTS), int8.encode(TEXTS), torch_int8.encode(TEXTS)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.97
    assert float(np.mean(np.sum(a * c, axis=1))) > 0.9
    for model in (int8, torch_int8):
        sims = model.encode(["steel wrist watch", "analog watch with strap", "cotton bath towel"])
        assert sims[0] @ sims[1] > sims[0] @ sims[2]


def test_text_quantization_comes_from_settings(settings):
    assert registry.base_text_encoder().quantization == "int8", "the default"
    settings.SIMILARITY = {**settings.SIMILARITY, "TEXT_QUANTIZATION": ""}
    assert registry.base_text_encoder().quantization == ""
    with pytest.raises(ValueError, match="text quantization 'int4'"):
        SentenceTransformerTextEncoder(quantization="int4")


# -- ONNX Runtime (encoders/onnx_runtime.py) ---------------------------------------------------
def _fresh_encoders(**kwargs):
    from similarity.encoders.image_model import TimmImageEncoder

    return SentenceTransformerTextEncoder(device="cpu", **kwargs), TimmImageEncoder(device="cpu", **kwargs)


@pytest.mark.slow
def test_onnx_runtime_runs_both_models_with_the_same_vectors_and_version():
    """The default on a CPU: both float32 models exported in memory and run on ONNX Runtime; the
    vectors are torch's to float rounding, so the model versions (and the index) stay the same."""
    from similarity.encoders.onnx_runtime import OnnxRunner

    text, image = _fresh_encoders()
    torch_text, torch_image = _fresh_encoders(onnx=False)
    text.quantization = torch_text.quantization = ""  # float32: the same vectors
    assert isinstance(text.onnx_runner, OnnxRunner) and isinstance(image.runner, OnnxRunner)
    assert torch_text.onnx_runner is None and not isinstance(torch_image.runner, OnnxRunner)
    long_text = " ".join(TEXTS * 60)  # past the model's 256 tokens: truncated the same way
    a, b = text.encode([*TEXTS, long_text]), torch_text.encode([*TEXTS, long_text])
    assert a.shape == b.shape == (len(TEXTS) + 1, 384)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.9999
    tensors = [image.preprocess(img) for img in _decoded()]
    x, y = image.encode_tensors(tensors), torch_image.encode_tensors(tensors)
    assert float(np.min(np.sum(x * y, axis=1))) > 0.9999
    np.testing.assert_allclose(image.encode_tensors(tensors[:1])[0], x[0], atol=1e-4)  # another batch size
    assert (text.version, image.version) == (torch_text.version, torch_image.version)


@pytest.mark.slow
def test_without_onnxruntime_the_models_run_on_torch(monkeypatch):
    from similarity.encoders import onnx_runtime

    monkeypatch.setattr(onnx_runtime, "available", lambda: False)
    text, image = _fresh_encoders()
    assert text.onnx_runner is None
    assert not isinstance(image.runner, onnx_runtime.OnnxRunner) and image.runner is not image.model  # frozen
    assert text.encode(TEXTS[:2]).shape == (2, 384)


@pytest.mark.slow
def test_an_onnx_copy_that_differs_from_torch_is_not_used(monkeypatch, caplog):
    """The check on the probe input: a copy whose output is not torch's (here: a bar no model
    can pass) is dropped with a warning and torch runs."""
    from similarity.encoders import onnx_runtime

    monkeypatch.setattr(onnx_runtime, "MIN_COSINE", 1.5)
    text, _image = _fresh_encoders()
    with caplog.at_level("WARNING", logger="similarity.encoders.onnx_runtime"):
        assert text.onnx_runner is None
    assert "differs from torch's" in caplog.text
    assert text.encode(TEXTS[:1]).shape == (1, 384)


def test_an_export_that_fails_leaves_the_model_on_torch(monkeypatch, caplog):
    from similarity.encoders import onnx_runtime

    def broken(*_args, **_kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_runtime, "export", broken)
    with caplog.at_level("WARNING", logger="similarity.encoders.onnx_runtime"):
        assert onnx_runtime.build("a model", torch.nn.Linear(2, 2), (torch.zeros(1, 2),), ["x"], {},
                                  lambda runner: (np.ones((1, 2)), np.ones((1, 2)))) is None
    assert "cannot run on ONNX Runtime (unsupported operator)" in caplog.text


def test_cpu_runtime_comes_from_settings(settings):
    from similarity.exceptions import SimilarityConfigError

    assert registry.base_text_encoder().onnx and registry.base_image_encoder().onnx
    settings.SIMILARITY = {**settings.SIMILARITY, "CPU_RUNTIME": "torch"}
    assert not registry.base_text_encoder().onnx and not registry.base_image_encoder().onnx
    settings.SIMILARITY = {**settings.SIMILARITY, "CPU_RUNTIME": "tensorrt"}
    with pytest.raises(SimilarityConfigError, match="CPU_RUNTIME"):
        registry.base_text_encoder()


@pytest.mark.django_db(transaction=True)
def test_a_rebuild_encodes_the_next_batch_while_it_writes_the_last(monkeypatch, dispatched):
    """``start_indexing`` queues batch N+1's encoding before batch N is written; every product
    ends up indexed, once."""
    from similarity import indexing, services

    products = [factories.product(f"Product {n}", description="cotton towel" if n % 2 else "steel watch")
                for n in range(5)]
    events: list[str] = []
    real_submit, real_write = pipeline.submit_batch, indexing._write

    def submit(*args, **kwargs):
        events.append("encode")
        return real_submit(*args, **kwargs)

    def write(*args, **kwargs):
        events.append("write")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pipeline, "submit_batch", submit)
    monkeypatch.setattr(indexing, "_write", write)
    report = services.rebuild_index(batch_size=2)
    assert events == ["encode", "encode", "write", "encode", "write", "write"]
    assert report.indexed == 5 and report.encoded["text"] == 5
    assert registry.vector_index().count() == len(products)


def test_a_missing_onnx_runtime_is_a_system_check_warning(monkeypatch):
    import sys

    from django.core.checks import run_checks

    assert "similarity.W016" not in {m.id for m in run_checks()}
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails, as when not installed
    warning = next(m for m in run_checks() if m.id == "similarity.W016")
    assert "onnxruntime cannot be imported" in warning.msg and "another model version" in warning.msg


@pytest.mark.slow
def test_an_int8_copy_that_fails_falls_back_to_torchs_int8_loudly(monkeypatch, caplog):
    """ONNX Runtime's int8 copy refused (here: a bar no model passes): torch quantises instead,
    under its own version, and the fallback is logged as an error (another model than the
    processes whose ONNX Runtime works)."""
    from similarity.encoders import onnx_runtime

    monkeypatch.setattr(onnx_runtime, "MIN_COSINE_INT8", 1.5)
    int8 = SentenceTransformerTextEncoder(device="cpu", quantization="int8")
    with caplog.at_level("ERROR", logger="similarity.encoders.onnx_runtime"):
        assert int8.version.endswith("+int8") and int8.onnx_runner is None
    assert [r.levelname for r in caplog.records if "differs from torch's" in r.getMessage()] == ["ERROR"]
    fp32 = SentenceTransformerTextEncoder(device="cpu", quantization="", onnx=False).encode(TEXTS)
    assert float(np.mean(np.sum(int8.encode(TEXTS) * fp32, axis=1))) > 0.9
