"""The class-ceiling diagnostic (bench/bench_class_ceiling.py) on the tiny UCM fixture."""
import pytest
import torch
from engine_fixtures import bench_module

bench = bench_module("bench_class_ceiling")


def test_class_oracle_rows_and_classifier_accuracy(tiny_model, ucm_root):
    from ssjdn.training.augment import load_images, test_view
    from ssjdn.training.datasets import load_dataset

    dataset = load_dataset(ucm_root, "val")
    assert dataset.labels == [1, 2, 0, 1]     # caption_fixtures.ucm_numbers: two share class 1
    views = torch.stack([test_view(image, {"test_size": tiny_model.input_size})
                         for image in load_images(dataset.image_paths)])
    result = bench.class_ceiling(tiny_model, dataset, views)

    # Class-only oracle by hand: classes 0 and 2 are ranked perfectly; the two class-1 images
    # tie with each other (t2i R@1 1/2 for their 10 captions) and each ties its 5 captions
    # with the other's 5 (i2t R@1 1/2, R@5 1 - 1/C(10,5)).
    i2t = [(2 + 2 * 0.5) / 4, (2 + 2 * (1 - 1 / 252)) / 4, 1.0]
    t2i = [(10 + 10 * 0.5) / 20, 1.0, 1.0]
    assert result["class_oracle_only_mR"] == pytest.approx(100 * sum(i2t + t2i) / 6, abs=0.01)
    # With the oracle on top, the model only orders pairs inside a class: classes 0 and 2
    # stay perfect whatever the model does, so it is never below the pessimistic bound.
    assert result["model_plus_class_oracle_mR"] >= 100 * (2 / 4 + 2 / 4 + 1 + 10 / 20 + 1 + 1) / 6 - 0.01
    assert 0.0 <= result["image_class_accuracy"] <= 1.0
    wrong = sum(int(line.rsplit(": ", 1)[1]) for line in result["image_confusions"])
    assert wrong == round((1 - result["image_class_accuracy"]) * len(dataset))
