"""The SEM pointing score of bench/bench_pointing.py, on synthetic maps and the tiny model."""
import pytest
import torch
from engine_fixtures import bench_module

pointing = bench_module("bench_pointing")


def test_pasted_object_lands_inside_its_box_on_a_plain_background():
    obj = torch.full((3, 20, 30), 255, dtype=torch.uint8)
    image, (x0, y0, x1, y1) = pointing.paste(obj, (10, 20, 30), (0.25, 0.75), canvas=100)
    assert (x1 - x0, y1 - y0) == (30, 20)
    assert bool((image[:, y0:y1, x0:x1] == 255).all())
    outside = image.clone()
    outside[:, y0:y1, x0:x1] = 0
    assert int(outside[0].max()) == 10 and int(outside[2].max()) == 30


def test_pasting_near_an_edge_keeps_the_object_whole():
    obj = torch.ones(3, 40, 40, dtype=torch.uint8)
    _, box = pointing.paste(obj, (0, 0, 0), (0.99, 0.01), canvas=100)
    assert box == (60, 0, 100, 40)


def test_a_map_inside_the_box_scores_one_and_a_flat_map_scores_the_box_area():
    box = (64, 64, 192, 192)
    inside = torch.zeros(32, 32)
    inside[10:14, 10:14] = 1.0        # well inside the box at stride 8
    assert pointing.mass_share(inside, box) == pytest.approx(1.0, abs=1e-6)
    flat = torch.ones(32, 32)
    assert pointing.mass_share(flat, box) == pytest.approx(pointing.uniform_share(box), rel=1e-4)
    assert pointing.uniform_share(box) == pytest.approx(0.25)


def test_scores_cover_every_sem_map_of_the_model(tiny_model):
    objects = [torch.randint(0, 256, (3, 16, 24), dtype=torch.uint8)]
    result = pointing.pointing_scores(tiny_model.to("cpu"), objects,
                                      backgrounds=[(128, 128, 128)], positions=[(0.5, 0.5)])
    assert result["pictures"] == 1
    assert len(result["maps"]) == 6
    for row in result["maps"].values():
        assert 0.0 <= row["share"] <= 1.0
        assert row["ratio"] == pytest.approx(row["share"] / result["uniform_share"])
