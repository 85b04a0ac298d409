"""The pasted-object benchmark's rules (bench/bench_find_objects.py) on synthetic images."""
import pytest
import torch
from engine_fixtures import bench_module

bench = bench_module("bench_find_objects")


def test_object_box_is_the_quarter_least_like_the_background():
    image = torch.full((3, 256, 256), 100, dtype=torch.uint8)
    image[:, 136:216, 24:104] = 250          # a bright object on plain ground
    x0, y0, x1, y1 = bench.object_box(image)
    assert (x1 - x0, y1 - y0) == (128, 128)
    assert x0 <= 24 and x1 >= 104 and y0 <= 136 and y1 >= 216


def test_ucm_class_of_an_image_number():
    assert bench.ucm_class("1.tif") == "agricultural"
    assert bench.ucm_class("101.tif") == "airplane"
    assert bench.ucm_class("2100.tif") == "tenniscourt"


def test_average_precision_of_perfect_mixed_and_missing_rankings():
    assert bench.average_precision([True, True, False], 2) == pytest.approx(1.0)
    assert bench.average_precision([False, True], 1) == pytest.approx(0.5)
    assert bench.average_precision([True, False], 2) == pytest.approx(0.5)   # one never found


def test_pointing_is_one_for_a_flat_map_and_four_for_a_map_inside_a_quarter_box():
    box = (0, 0, 128, 128)
    ramp = torch.zeros(32, 32)
    ramp[2:14, 2:14] = 1.0
    score, inside = bench.pointing(ramp, box)
    assert score == pytest.approx(4.0, abs=1e-3) and inside
    flat = torch.ones(32, 32) * 0.3
    assert bench.pointing(flat, box, shift=False)[0] == pytest.approx(1.0, rel=1e-4)
    assert bench.pointing(flat, box)[0] == pytest.approx(1.0, rel=1e-4)


def test_tile_score_regions_are_quarters_or_half_windows_at_quarter_steps(tiny_model):
    scores = bench_module("bench_tile_scores")
    quarters = scores.region_slices(32, 2)
    assert [(r.start, r.stop, c.start, c.stop) for r, c in quarters] == [
        (0, 16, 0, 16), (0, 16, 16, 32), (16, 32, 0, 16), (16, 32, 16, 32)]
    nine = scores.region_slices(32, 3)
    assert len(nine) == 9 and all(r.stop - r.start == 16 for r, _ in nine) and nine[-1][0].stop == 32
    vectors = scores.tile_vectors(tiny_model.to("cpu"), torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))
    assert vectors["regions2"].shape[:2] == (2, 4) and vectors["regions3"].shape[:2] == (2, 9)
    assert torch.allclose(vectors["regions3"].norm(dim=-1), torch.ones(2, 9), atol=1e-5)
    assert torch.allclose(vectors["logp"].exp().sum(-1), torch.ones(2), atol=1e-5)


class _KindReader:
    """A stand-in model whose vectors say which object a tile holds (its first pixel's value
    codes the kind), so every query's ranking is known."""
    kinds = list(bench.OBJECT_QUERIES)

    def encode_images(self, tiles):
        return torch.nn.functional.one_hot(tiles[:, 0, 0, 0].long(), len(self.kinds) + 1).float()

    def encode_texts(self, texts):
        return torch.eye(len(self.kinds) + 1)[[list(bench.OBJECT_QUERIES.values()).index(t) + 1
                                              for t in texts]]

    similarity = staticmethod(lambda images, texts: images @ texts.T)


def test_in_process_ap_is_one_when_each_query_ranks_its_composites_first():
    kinds = [None, "airplane", "storagetanks", None, "tenniscourt", "baseballdiamond", "airplane"]
    records = [{"kind": k} for k in kinds]
    code = [0 if k is None else _KindReader.kinds.index(k) + 1 for k in kinds]
    tiles = torch.tensor(code, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    result = bench.in_process_ap(_KindReader(), tiles, records)
    assert result == {**{k: pytest.approx(1.0) for k in bench.OBJECT_QUERIES}, "mean": pytest.approx(1.0)}
    # A reader that sees airplanes as nothing finds them last among the seven tiles.
    blind = [0 if k == "airplane" else c for k, c in zip(kinds, code)]
    tiles = torch.tensor(blind, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    result = bench.in_process_ap(_KindReader(), tiles, records)
    assert result["airplane"] < 0.6 and result["mean"] < 1.0
