"""One query's text on a CPU through ONNX Runtime (issue 8: MiniLM in PyTorch eager took
21-41 ms of a 10M-tile search on 2 cores, ONNX Runtime 8-9 ms with the same numbers)."""
import sys
import warnings

import numpy as np
import pytest
import torch

from engine_fixtures import index_small_scene
from ssjdn.core.model import fast_text
from ssjdn.core.query.search import search_text

TEXTS = ["a river", "many cars are parked in a parking lot next to a road", "storage tanks"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSJDN_CACHE_DIR", str(tmp_path / "cache"))
    fast_text.forget_encoders()
    yield tmp_path / "cache"
    fast_text.forget_encoders()


def test_a_query_encodes_as_the_model_does_through_onnx_runtime(cache, tiny_model):
    fingerprint = tiny_model.fingerprint
    encoder = fast_text.query_encoder(tiny_model)
    assert encoder.runtime == "onnxruntime"
    assert not tiny_model.training and tiny_model.fingerprint == fingerprint   # export left it as it was
    for text in TEXTS:   # different token counts through one exported graph
        expected = tiny_model.encode_texts([text]).float().numpy()
        np.testing.assert_allclose(encoder.encode(text), expected, atol=1e-5)
    assert list(cache.glob("onnx/*.onnx"))


def test_the_exported_file_is_reused_by_the_next_process(cache, tiny_model, monkeypatch):
    fast_text.query_encoder(tiny_model)
    fast_text.forget_encoders()            # as a new process would start
    import torch
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: pytest.fail("exported again"))
    assert fast_text.query_encoder(tiny_model).runtime == "onnxruntime"


def test_without_onnx_runtime_queries_are_encoded_by_pytorch(cache, tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # import fails
    encoder = fast_text.query_encoder(tiny_model)
    assert encoder.runtime == "pytorch"
    np.testing.assert_array_equal(encoder.encode("a river"),
                                  tiny_model.encode_texts(["a river"]).float().numpy())


def test_a_damaged_cached_file_is_exported_again(cache, tiny_model):
    fast_text.query_encoder(tiny_model)
    fast_text.forget_encoders()
    for path in cache.glob("onnx/*.onnx"):
        path.write_bytes(b"not an onnx file")
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # recovered: nothing to warn about
        encoder = fast_text.query_encoder(tiny_model)
    assert encoder.runtime == "onnxruntime"
    np.testing.assert_allclose(encoder.encode("a river"), tiny_model.encode_texts(["a river"]).float().numpy(),
                               atol=1e-5)


def test_text_search_gives_the_same_hits_through_either_runtime(cache, tmp_path, tiny_model, monkeypatch):
    index, _ = index_small_scene(tmp_path, tiny_model)
    fast_text.query_encoder(tiny_model)    # made (and checked against PyTorch) before counting
    runtimes = []
    real = fast_text.QueryEncoder.encode
    monkeypatch.setattr(fast_text.QueryEncoder, "encode",
                        lambda self, text: runtimes.append(self.runtime) or real(self, text))
    with index:
        fast = [(h.tile_id, round(h.score, 5)) for h in search_text(index, tiny_model, "a river", k=8)]
        assert runtimes == ["onnxruntime"]
        fast_text.forget_encoders()
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
        slow = [(h.tile_id, round(h.score, 5)) for h in search_text(index, tiny_model, "a river", k=8)]
    assert fast == slow and runtimes == ["onnxruntime", "pytorch"]


def test_only_the_most_recent_exports_are_kept(cache, monkeypatch):
    # Each export of MiniLM is ~90 MB: trying checkpoint after checkpoint must not fill the disk.
    import os
    import time
    from ssjdn.core.model.api import create_model
    monkeypatch.setattr(fast_text, "KEPT_EXPORTS", 2)
    made = []
    for seed in range(3):
        torch.manual_seed(seed)
        before = set(cache.glob("onnx/*.onnx"))
        fast_text.query_encoder(create_model("tiny"))
        (new,) = set(cache.glob("onnx/*.onnx")) - before
        os.utime(new, (time.time() - 100 + seed,) * 2)   # distinct ages, oldest first
        made.append(new)
    assert sorted(cache.glob("onnx/*.onnx")) == sorted(made[1:])
