"""The moving average of a run's weights (training config `ema_epochs`): what is validated
and kept as best.safetensors when it is on, resumed exactly, and the plain run when off."""
import csv
import math

import torch
from safetensors.torch import load_file

from caption_fixtures import tiny_config
from ssjdn.core.model.api import create_model, load_model
from ssjdn.training.averaging import WeightAverage
from ssjdn.training.train import train


def test_the_average_follows_the_weights_with_the_decay_of_its_time_constant():
    model = create_model("tiny", pretrained=False, device="cpu")
    average = WeightAverage(model, epochs=2, steps_per_epoch=5)
    assert math.isclose(average.decay, math.exp(-1 / 10))
    name, parameter = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    start = parameter.detach().clone()
    with torch.no_grad():
        parameter.add_(1.0)
    average.update(model)
    weight = min(average.decay, 2 / 11)   # the warm-up: early averages trust the new weights
    expected = weight * start + (1 - weight) * (start + 1.0)
    assert torch.allclose(dict(average.model.named_parameters())[name], expected, atol=1e-6)
    # The copy is frozen exactly where the model is (checkpoints reference frozen weights).
    assert [p.requires_grad for p in average.model.parameters()] == \
        [p.requires_grad for p in model.parameters()]


def test_a_run_with_the_average_validates_it_and_keeps_it_as_best(ucm_root, tmp_path):
    train(tiny_config(epochs=2, ema_epochs=1), ucm_root, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert len(rows) == 2 and all(0 <= float(r["mR_raw"]) <= 100 for r in rows)
    best = load_model(tmp_path / "best.safetensors", device="cpu")
    assert best.checkpoint_extra["weights"] == "moving average (1 epoch)"
    averaged, raw = load_file(tmp_path / "best.safetensors"), load_file(tmp_path / "last.safetensors")
    assert any(not torch.equal(averaged[k], raw[k]) for k in raw)   # the average, not the weights


def test_a_resumed_run_continues_the_average_exactly(ucm_root, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_config(epochs=3, ema_epochs=1), ucm_root, straight)
    train(tiny_config(epochs=1, ema_epochs=1), ucm_root, resumed)
    train(tiny_config(epochs=3, ema_epochs=1), ucm_root, resumed, resume=True)
    a = torch.load(straight / "trainer_state.pt", weights_only=True)["weight_average"]
    b = torch.load(resumed / "trainer_state.pt", weights_only=True)["weight_average"]
    assert a["updates"] == b["updates"] > 0
    for key in a["weights"]:
        assert torch.equal(a["weights"][key], b["weights"][key]), key


def test_without_the_average_nothing_changes(ucm_root, tmp_path):
    train(tiny_config(epochs=1), ucm_root, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert "mR_raw" not in rows[0]
    assert "weight_average" not in torch.load(tmp_path / "trainer_state.pt", weights_only=True)


def test_the_kept_average_scores_in_ssjdn_eval_what_the_run_logged_for_it(ucm_root, tmp_path):
    from ssjdn.training.evaluate import evaluate_checkpoint
    train(tiny_config(epochs=3, ema_epochs=1), ucm_root, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    best = load_model(tmp_path / "best.safetensors", device="cpu")
    logged = next(float(r["mR"]) for r in rows if int(r["epoch"]) == best.checkpoint_extra["epoch"])
    result = evaluate_checkpoint(tmp_path / "best.safetensors", ucm_root, "val", device="cpu",
                                 log=lambda *_: None)
    assert math.isclose(result["metrics"]["mR"], logged, abs_tol=0.05)


def test_the_saved_average_keeps_the_trained_weights_of_a_pretrained_encoder(tmp_path):
    # The 2026-12-04 device session logged val mR 51.2 for an end-to-end run whose kept average
    # scored 32.5 in `ssjdn eval`: the average's copy had every parameter marked frozen, so
    # save_checkpoint wrote the trained backbone and text encoder as references to their
    # pretrained packages, and loading brought the untrained weights back.
    from ssjdn.core.model.api import save_checkpoint
    from ssjdn.core.model.pretrained import PretrainedSource

    model = create_model("tiny", pretrained=False, device="cpu")
    model.backbone.pretrained_source = PretrainedSource("some-package", "/nowhere", "0" * 64)
    average = WeightAverage(model, epochs=1, steps_per_epoch=1)
    name, parameter = next((n, p) for n, p in model.named_parameters()
                           if n.startswith("backbone.") and p.requires_grad)
    with torch.no_grad():
        parameter.add_(1.0)
    average.update(model)
    saved = load_file(save_checkpoint(average.model, tmp_path / "best.safetensors"))
    assert torch.equal(saved[name], dict(average.model.named_parameters())[name].detach())


def test_the_final_average_loads_as_the_model_the_last_epoch_validated(ucm_root, tmp_path):
    # Comparing seeds on their last epochs (bench/bench_test_views.py) needs the averaged
    # weights the last epoch scored, which live in the trainer state, not in best.safetensors.
    from ssjdn.training.checkpoints import load_final_average
    from ssjdn.training.datasets import load_dataset
    from ssjdn.training.evaluate import evaluate_model
    from ssjdn.training.augment import load_images
    train(tiny_config(epochs=3, ema_epochs=1), ucm_root, tmp_path)
    last_row = list(csv.DictReader(open(tmp_path / "log.csv")))[-1]
    model = load_final_average(tmp_path, device="cpu")
    assert model.checkpoint_extra["weights"] == "moving average (1 epoch), epoch 3"
    val = load_dataset(ucm_root, "val")
    test_size = model.checkpoint_extra["train_config"]["augment"]["test_size"]
    metrics = evaluate_model(model, val, images=load_images(val.image_paths), test_size=test_size)
    assert math.isclose(metrics["mR"], float(last_row["mR"]), abs_tol=0.05)
    raw = load_model(tmp_path / "last.safetensors", device="cpu").state_dict()
    assert any(not torch.equal(value, raw[name]) for name, value in model.state_dict().items())


def test_a_run_without_the_average_has_no_final_average_to_load(ucm_root, tmp_path):
    import pytest
    from ssjdn.core.errors import UserError
    from ssjdn.training.checkpoints import load_final_average
    train(tiny_config(epochs=1), ucm_root, tmp_path)
    with pytest.raises(UserError, match="no moving average"):
        load_final_average(tmp_path, device="cpu")


def test_the_final_average_is_written_as_an_fp16_checkpoint_and_never_over_a_file(ucm_root, tmp_path):
    # A default is shipped from a run's final average, which no checkpoint of the run holds.
    import pytest
    from ssjdn.core.errors import UserError
    from ssjdn.training.checkpoints import load_final_average, save_final_average
    run = tmp_path / "run"
    train(tiny_config(epochs=2, ema_epochs=1), ucm_root, run)
    written = save_final_average(run, tmp_path / "final.safetensors")
    shipped = load_model(written, device="cpu")
    assert shipped.checkpoint_extra["weights"] == "moving average (1 epoch), epoch 2"
    assert all(t.dtype != torch.float32 for t in load_file(written).values())
    average = load_final_average(run, device="cpu").state_dict()
    for name, value in shipped.state_dict().items():
        assert torch.allclose(value.float(), average[name].float(), atol=1e-2, rtol=1e-2)
    with pytest.raises(UserError, match="already exists"):
        save_final_average(run, written)
    # A folder that is not a run is named as such, not called a damaged run.
    with pytest.raises(UserError, match="holds no trainer_state.pt: give the --out folder"):
        save_final_average(tmp_path / "not_a_run", tmp_path / "other.safetensors")
