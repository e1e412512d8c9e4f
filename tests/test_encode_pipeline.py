"""The encode pipeline and the CPU levers (frozen image model, int8 text model), on the real
models with the offline weights."""

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
def test_int8_text_model_is_another_version_and_keeps_the_meaning():
    fp32 = registry.base_text_encoder()
    int8 = SentenceTransformerTextEncoder(device="cpu", quantization="int8")
    if fp32.device_name != "cpu":
        pytest.skip("int8 dynamic quantisation is a CPU path")
    assert int8.version == f"{fp32.version}+int8", "the index re-encodes every text when it is turned on"
    a, b = fp32.encode(TEXTS), int8.encode(TEXTS)
    assert float(np.mean(np.sum(a * b, axis=1))) > 0.9
    sims = int8.encode(["steel wrist watch", "analog watch with strap", "cotton bath towel"])
    assert sims[0] @ sims[1] > sims[0] @ sims[2]


def test_text_quantization_comes_from_settings(settings):
    settings.SIMILARITY = {**settings.SIMILARITY, "TEXT_QUANTIZATION": "int8"}
    assert registry.base_text_encoder().quantization == "int8"
    with pytest.raises(ValueError, match="text quantization 'int4'"):
        SentenceTransformerTextEncoder(quantization="int4")
