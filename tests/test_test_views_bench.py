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
    # The fixture's val images are all of one class: the pasted-object rows are left out, said.
    assert "pasted-object AP left out" in out and "pasted AP" not in out.split("left out")[1]


def test_pasted_rows_score_the_model_as_it_is_and_with_class_evidence_and_leave_it_unchanged(tiny_model):
    kinds = ["airplane", None, "storagetanks", None, "tenniscourt", "baseballdiamond", None, "airplane"]
    records = [{"kind": k} for k in kinds]
    tiles = torch.randint(0, 256, (len(kinds), 3, 64, 64), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    rows = bench.pasted_rows(tiny_model.to("cpu"), tiles, records)
    assert set(rows) == {"pasted AP", "pasted AP, class evidence 3"}
    assert all(0 < value <= 1 for value in rows.values())
    assert "test_views" not in tiny_model.config["image"] and tiny_model.class_evidence_weight == 0
