"""Class evidence in the joint vectors (issue 16, item 2): with `class_evidence_weight` w > 0 a
model's image and text vectors carry LSD's class distribution beside the embedding, so a tile
whose LSD attention finds the asked-for class scores higher even when its pooled embedding
reads as the background. The vectors stay unit-norm; indexes, ONNX queries and query maps
use the same vectors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine_fixtures import index_small_scene
from ssjdn.core.errors import UserError
from ssjdn.core.model import fast_text
from ssjdn.core.model.api import create_model
from ssjdn.core.query.search import search_text

WEIGHT = 3.0


@pytest.fixture(scope="module")
def evidence_model():
    torch.manual_seed(0)
    return create_model("tiny", overrides={"class_evidence_weight": WEIGHT}, device="cpu")


def _images(count=3, size=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)


def test_vectors_are_unit_and_the_cosine_adds_the_weighted_class_agreement(evidence_model):
    model, images, texts = evidence_model, _images(), ["a forest", "an airport with planes"]
    categories = len(model.categories)
    image_vectors, text_vectors = model.encode_images(images), model.encode_texts(texts)
    assert image_vectors.shape == (3, 16 + categories) == (3, model.vector_dim)
    assert text_vectors.shape == (2, model.vector_dim)
    assert torch.allclose(image_vectors.norm(dim=-1), torch.ones(3), atol=1e-5)
    # The same cosine from the parts: (g.t + w p_image.p_text) / (|a| |b|).
    with torch.no_grad():
        base, logits, _ = model.image_from_features(model.backbone_features(model.preprocess_images(images)))
        batch = model.tokenize(texts)
        text_base, text_logits = model.text_forward(batch["input_ids"], batch["attention_mask"])
    g, t = F.normalize(base, dim=-1), F.normalize(text_base, dim=-1)
    p_image, p_text = logits.softmax(-1), text_logits.softmax(-1)
    numerator = g @ t.T + WEIGHT * p_image @ p_text.T
    norms = torch.outer((1 + WEIGHT * (p_image ** 2).sum(-1)).sqrt(), (1 + WEIGHT * (p_text ** 2).sum(-1)).sqrt())
    assert torch.allclose(image_vectors @ text_vectors.T, numerator / norms, atol=1e-5)


def test_without_the_weight_the_vectors_are_the_embeddings(tiny_model):
    images = _images()
    with torch.no_grad():
        base, _, _ = tiny_model.image_from_features(tiny_model.backbone_features(tiny_model.preprocess_images(images)))
    assert tiny_model.vector_dim == 16
    assert torch.allclose(tiny_model.encode_images(images), F.normalize(base, dim=-1), atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    ({"class_evidence_weight": -1}, ">= 0"),
    ({"class_evidence_weight": float("nan")}, ">= 0"),
    ({"class_evidence_weight": "strong"}, ">= 0"),
])
def test_a_bad_weight_is_one_clear_message(overrides, message):
    with pytest.raises(UserError, match=message):
        create_model("tiny", overrides=overrides, device="cpu")


@pytest.mark.parametrize("overrides", [{"lsd": False}, {"categories": []}])
def test_without_lsd_there_is_no_class_evidence_and_the_vectors_are_the_embeddings(overrides):
    # The model configs ask for class evidence; the LSD ablation and datasets without
    # categories must still build (and index) as plain embeddings.
    model = create_model("tiny", overrides={"class_evidence_weight": WEIGHT, **overrides}, device="cpu")
    assert model.class_evidence_weight == 0 and model.vector_dim == 16
    assert model.encode_images(_images(1)).shape == (1, 16)


def test_an_index_and_its_onnx_queries_use_the_same_vectors(evidence_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SSJDN_CACHE_DIR", str(tmp_path / "cache"))
    fast_text.forget_encoders()
    try:
        index, _ = index_small_scene(tmp_path, evidence_model)
        assert index.dim == evidence_model.vector_dim
        encoder = fast_text.query_encoder(evidence_model)
        expected = evidence_model.encode_texts(["storage tanks"]).numpy()
        np.testing.assert_allclose(encoder.encode("storage tanks"), expected, atol=1e-5)
        hits = search_text(index, evidence_model, "storage tanks", k=5)
        tiles = torch.from_numpy(index.vectors([h.tile_id for h in hits]))
        scores = (tiles @ torch.from_numpy(expected[0])).numpy()
        np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-3)   # float16 storage
    finally:
        fast_text.forget_encoders()


def test_the_query_map_explains_the_score_with_its_class_evidence(evidence_model):
    maps = evidence_model.query_maps(_images(2), "an airport")
    side = evidence_model.input_size // 8
    assert maps.shape == (2, side, side) and torch.isfinite(maps).all() and (maps >= 0).all()


def test_validation_from_cached_features_scores_the_same_vectors_as_from_pixels(ucm_root, tmp_path):
    # With the feature cache, validation builds image vectors from cached backbone features:
    # they must be the joint vectors too (before: plain embeddings against joint text vectors).
    from caption_fixtures import tiny_config
    from ssjdn.core.model.api import load_model
    from ssjdn.training.datasets import load_dataset
    from ssjdn.training.evaluate import evaluate_model, load_images
    from ssjdn.training.train import train

    overrides = {"image": {"freeze_stages": 2}, "class_evidence_weight": WEIGHT}
    train(tiny_config(epochs=1, feature_cache={"views": 1}, model_overrides=overrides), ucm_root, tmp_path)
    model = load_model(tmp_path / "last.safetensors", device="cpu")
    assert model.vector_dim == 16 + len(model.categories)
    logged = float(open(tmp_path / "log.csv").read().splitlines()[-1].split(",")[
        open(tmp_path / "log.csv").read().splitlines()[0].split(",").index("mR")])
    val = load_dataset(ucm_root, "val", name="ucm")
    assert abs(evaluate_model(model, val, images=load_images(val.image_paths))["mR"] - logged) < 0.5
