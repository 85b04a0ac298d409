"""The real-scene contact sheets (bench/bench_real_scenes.py) compare a model with the same
weights without class evidence: that variant must be the plain embedding, and leave the model
as it was."""
import torch
from engine_fixtures import bench_module

bench = bench_module("bench_real_scenes")


def test_the_variant_without_class_evidence_compares_plain_embeddings_of_the_same_weights():
    from ssjdn.core.model.api import create_model
    from ssjdn.core.model.fast_text import encode_query
    torch.manual_seed(0)
    model = create_model("tiny", overrides={"class_evidence_weight": 3.0}).eval()
    plain = bench.without_class_evidence(model)
    assert model.vector_dim == plain.vector_dim + len(model.categories)
    assert model.class_evidence_weight == 3.0 and model.config["class_evidence_weight"] == 3.0
    assert all(a is b for a, b in zip(plain.parameters(), model.parameters()))   # same weights
    assert encode_query(plain, "a bridge").shape[-1] == plain.vector_dim
    assert encode_query(model, "a bridge").shape[-1] == model.vector_dim
