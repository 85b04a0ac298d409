"""The test-time views benchmark (bench/bench_test_views.py) on tiny runs of the UCM fixture."""
import sys

import torch
from caption_fixtures import tiny_config
from engine_fixtures import bench_module

bench = bench_module("bench_test_views")


def test_views_are_scored_without_changing_the_model(tiny_model, ucm_root):
    from ssjdn.training.augment import load_images, test_view
    from ssjdn.training.datasets import load_dataset

    dataset = load_dataset(ucm_root, "val")
    images = [test_view(image, {"test_size": tiny_model.input_size})
              for image in load_images(dataset.image_paths)]
    one = bench.scores_of(tiny_model, dataset, images, 1)
    two = bench.scores_of(tiny_model, dataset, images, 2, class_evidence=3.0)
    assert "test_views" not in tiny_model.config["image"] and tiny_model.class_evidence_weight == 0
    assert not torch.allclose(one, two)
    # Two views average the upright and the half-turned tile, so the half-turned tiles score the same.
    turned = [torch.rot90(image, 2, (-2, -1)) for image in images]
    assert torch.allclose(bench.scores_of(tiny_model, dataset, turned, 2), bench.scores_of(
        tiny_model, dataset, images, 2), atol=1e-5)


def test_training_folders_are_scored_on_their_final_average(ucm_root, tmp_path, capsys, monkeypatch):
    from ssjdn.training.train import train
    runs = []
    for seed in (0, 1):
        runs.append(tmp_path / f"seed{seed}")
        train(tiny_config(epochs=1, ema_epochs=1, seed=seed), ucm_root, runs[-1])
    monkeypatch.setattr(sys, "argv", ["bench", "--data-root", str(ucm_root), "--threads", "1",
                                      "--ensemble", *map(str, runs)])
    bench.main()
    out = capsys.readouterr().out
    assert "mean +- std over 2 models:" in out and "views 4:" in out
    assert "ensemble of 2 (mean score), views 2:" in out
