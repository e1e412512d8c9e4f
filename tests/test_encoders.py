"""One contract suite for every encoder, run against the real models with the offline weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from similarity import registry
from similarity.encoders.image_decoding import open_image
from similarity.encoders.image_model import TimmImageEncoder, load_by_position, offline_checkpoint
from tests import factories


def _text_inputs() -> list:
    return ["red cotton bath towel", "analog wrist watch with leather strap", "ceramic coffee mug", ""]


def _image_inputs() -> list:
    import io

    return [
        open_image(io.BytesIO(factories.png_bytes(color, (80, 60))), name=str(color), max_pixels=10**8)
        for color in [(200, 0, 0), (0, 0, 200), (0, 200, 0), (255, 255, 255)]
    ]


ENCODERS = {
    "text": (registry.text_encoder, _text_inputs, 384),
    "image": (registry.image_encoder, _image_inputs, 1280),
}


@pytest.fixture(params=list(ENCODERS))
def encoder_case(request):
    build, inputs, dim = ENCODERS[request.param]
    return build(), inputs(), dim


def test_dimension_dtype_and_norm(encoder_case):
    encoder, inputs, dim = encoder_case
    vectors = encoder.encode(inputs)
    assert encoder.dim == dim
    assert vectors.shape == (len(inputs), dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batched_equals_one_at_a_time(encoder_case):
    encoder, inputs, _dim = encoder_case
    batched = encoder.encode(inputs)
    single = np.vstack([encoder.encode([x]) for x in inputs])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_empty_batch(encoder_case):
    encoder, _inputs, dim = encoder_case
    assert encoder.encode([]).shape == (0, dim)


def test_version_names_model_and_weights_hash(encoder_case):
    encoder, _inputs, _dim = encoder_case
    name, _, digest = encoder.version.partition("@")
    digest, _, variant = digest.partition("+")  # "+int8-onnx": the int8 text model on a CPU
    assert name == encoder.name
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert variant in {"", "int8-onnx"}


def test_models_are_loaded_once_per_process():
    assert registry.text_encoder() is registry.text_encoder()
    assert registry.image_encoder().model is registry.image_encoder().model


def test_text_meaning():
    vectors = registry.text_encoder().encode(["soft cotton bath towel", "absorbent towel for the bathroom",
                                              "men's analog wrist watch"])
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_offline_image_weights_are_the_imagenet_ones(flipkart, flipkart_rows):
    """The packaged state dict, loaded by position, classifies a watch photo as a timepiece."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_by_position(model, torch.load(offline_checkpoint("tf_efficientnet_lite0"), weights_only=True))
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    watch = next(r for r in flipkart_rows if r["category"].startswith("Watches"))
    image = open_image(str(flipkart / watch["image"]), name="watch", max_pixels=10**8)
    with torch.inference_mode():
        top5 = model(transform(image)[None]).topk(5).indices[0].tolist()
    timepieces = {409, 531, 826, 892}  # analog clock, digital watch, stopwatch, wall clock
    assert timepieces & set(top5)


def test_load_by_position_rejects_a_mismatched_checkpoint():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(offline_checkpoint("tf_efficientnet_lite0"), weights_only=True)
    state.popitem()
    with pytest.raises(ValueError, match="295 tensors"):
        load_by_position(model, state)


def test_a_local_timm_checkpoint_works(tmp_path):
    """Any timm model + local checkpoint: save a tiny model's weights and load them back."""
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    encoder = TimmImageEncoder("resnet18", checkpoint=str(path), device="cpu")
    vectors = encoder.encode(_image_inputs()[:2])
    assert vectors.shape == (2, 512)
    assert encoder.version.startswith("resnet18@")
