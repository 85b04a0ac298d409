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


def test_the_model_cost_bench_counts_wider_heads_as_dearer_and_rates_against_the_first(capsys):
    cost = bench_module("bench_model_cost")
    result = cost.main(["--candidates", "tiny:16", "tiny:32", "--batch", "2", "--repeat", "1", "--layouts"])
    narrow, wide = result["tiny:16"], result["tiny:32"]
    assert narrow["rate_vs_reference"] == 1.0 and wide["tiles_per_s"] > 0
    assert wide["backbone_gmac"] == narrow["backbone_gmac"] > 0   # the width is the heads'
    assert wide["gmac_per_tile"] > narrow["gmac_per_tile"]
    assert "tiny:32" in capsys.readouterr().out
    assert result["tiny:16 contiguous"]["gmac_per_tile"] == narrow["gmac_per_tile"]   # same work
