"""End-to-end training on tiny fixture datasets, on the CPU, with the `tiny` model."""
import csv
import json
import threading

import pytest
import torch
from safetensors.torch import load_file

from caption_fixtures import TINY_CONFIG, tiny_config
from ssjdn.core.model.api import load_model, read_checkpoint_metadata
from ssjdn.core.errors import UserError
from ssjdn.training.batches import EpochBatchSampler, negative_mask_for
from ssjdn.training.train import train

def test_one_epoch_writes_checkpoints_logs_and_a_loadable_model(ucm_root, tmp_path):
    events = []
    summary = train(tiny_config(), ucm_root, tmp_path, progress=events.append)
    assert summary["status"] == "finished" and summary["epochs_done"] == 1
    for name in ("last.safetensors", "best.safetensors", "trainer_state.pt", "log.csv"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "tb").iterdir()), "TensorBoard event file expected"
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert len(rows) == 1 and float(rows[0]["loss"]) > 0 and 0 <= float(rows[0]["mR"]) <= 100
    model = load_model(tmp_path / "best.safetensors", device="cpu")
    assert model.checkpoint_extra["epoch"] == 1
    assert model.checkpoint_extra["train_config"]["dataset"] == "ucm"
    assert model.encode_texts(["a farmland"]).shape == (1, 16)
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3]           # 10 images, batch 4 -> 4, 4, 2
    assert events[-1]["event"] == "done"
    # The trainer state loads without unpickling arbitrary objects.
    state = torch.load(tmp_path / "trainer_state.pt", weights_only=True)
    assert state["epoch"] == 1 and "optimizer" in state


def test_resume_continues_to_the_same_state_as_an_uninterrupted_run(ucm_root, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_config(epochs=3), ucm_root, straight)
    train(tiny_config(epochs=1), ucm_root, resumed)
    summary = train(tiny_config(epochs=3), ucm_root, resumed, resume=True)
    assert summary["epochs_done"] == 3
    a, b = load_file(straight / "last.safetensors"), load_file(resumed / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    state_a = torch.load(straight / "trainer_state.pt", weights_only=True)
    state_b = torch.load(resumed / "trainer_state.pt", weights_only=True)
    untimed = lambda history: [{k: v for k, v in row.items() if not k.endswith("_seconds")}  # noqa: E731
                               for row in history]
    assert untimed(state_a["history"]) == untimed(state_b["history"])
    assert torch.equal(state_a["rng"]["generator"], state_b["rng"]["generator"])


def test_resume_without_a_previous_run_is_a_user_error(ucm_root, tmp_path):
    with pytest.raises(UserError, match="Nothing to resume"):
        train(tiny_config(), ucm_root, tmp_path, resume=True)


def test_cancel_stops_before_the_next_step_and_keeps_the_finished_epoch(ucm_root, tmp_path):
    stop = threading.Event()

    def progress(event):
        if event["event"] == "step" and event["epoch"] == 2:
            stop.set()

    summary = train(tiny_config(epochs=3), ucm_root, tmp_path, progress=progress, cancel=stop)
    assert summary["status"] == "cancelled" and summary["epochs_done"] == 1
    assert read_checkpoint_metadata(tmp_path / "last.safetensors")["extra"]["epoch"] == 1


def test_feature_cache_trains_on_precomputed_backbone_maps(ucm_root, tmp_path):
    config = tiny_config(feature_cache={"views": 2},
                         model_overrides={"image": {"freeze_stages": 4}})
    summary = train(config, ucm_root, tmp_path)
    assert summary["status"] == "finished"
    cached = sorted(p.name for p in (tmp_path / "feature_cache").iterdir())
    assert cached == ["ucm_train_view0.safetensors", "ucm_train_view1.safetensors",
                      "ucm_val_test.safetensors"]
    # The validation score from cached maps equals a fresh evaluation from pixels.
    from ssjdn.training.evaluate import evaluate_checkpoint
    report = evaluate_checkpoint(tmp_path / "last.safetensors", ucm_root, "val",
                                 report=tmp_path / "eval.json", device="cpu", log=lambda m: None)
    logged = list(csv.DictReader(open(tmp_path / "log.csv")))[-1]
    assert report["metrics"]["mR"] == pytest.approx(float(logged["mR"]), abs=1e-6)


def test_feature_cache_refuses_a_trainable_backbone(ucm_root, tmp_path):
    with pytest.raises(UserError, match="needs frozen backbone stages"):
        train(tiny_config(feature_cache={"views": 2}), ucm_root, tmp_path)


def test_cli_train_then_eval_writes_a_json_report(ucm_root, tmp_path, capsys):
    from ssjdn.core.cli.main import main
    out = tmp_path / "run"
    assert main(["train", "--config", str(TINY_CONFIG), "--data-root", str(ucm_root),
                 "--out", str(out)]) == 0
    report = tmp_path / "report.json"
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), "--data-root",
                 str(ucm_root), "--split", "test", "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "image->text R@1" in printed and "mR" in printed
    data = json.loads(report.read_text())
    assert data["split"] == "test" and data["images"] == 4 and data["captions"] == 20
    headline = {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mR"}
    assert set(data["metrics"]) == headline | {f"{key}_{ties}" for key in headline
                                               for ties in ("pessimistic", "plain")}
    assert "random order" in data["ties"]


def test_the_best_epoch_is_chosen_by_the_tie_aware_mR(ucm_root, tmp_path, monkeypatch):
    import ssjdn.training.train as train_module
    # Epoch 1 wins by the stable-sort (plain) numbers, epoch 2 by the expected ones.
    by_epoch = iter([{"mR": 50.0, "mR_plain": 60.0}, {"mR": 55.0, "mR_plain": 40.0}])

    def fake_evaluate(*args, **kwargs):
        return {**{f"{d}_R@{k}": 0.0 for d in ("i2t", "t2i") for k in (1, 5, 10)},
                **next(by_epoch)}

    monkeypatch.setattr(train_module, "evaluate_model", fake_evaluate)
    summary = train(tiny_config(epochs=2), ucm_root, tmp_path)
    assert summary["best_epoch"] == 2 and summary["best_mR"] == 55.0
    assert read_checkpoint_metadata(tmp_path / "best.safetensors")["extra"]["epoch"] == 2


def test_a_resumed_run_keeps_the_columns_its_log_started_with(ucm_root, tmp_path):
    train(tiny_config(epochs=1), ucm_root, tmp_path)
    log = tmp_path / "log.csv"
    rows = list(csv.DictReader(open(log)))
    older = ["epoch", "loss", "mR"]       # as a version that logged fewer metrics wrote it
    with open(log, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=older, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    train(tiny_config(epochs=2), ucm_root, tmp_path, resume=True)
    resumed = list(csv.DictReader(open(log)))
    assert [list(row) for row in resumed] == [older, older]
    assert resumed[1]["epoch"] == "2" and 0 <= float(resumed[1]["mR"]) <= 100


def test_cli_reports_an_unknown_split_as_a_one_line_error(ucm_root, tmp_path, capsys):
    from ssjdn.core.cli.main import main
    out = tmp_path / "run"
    main(["train", "--config", str(TINY_CONFIG), "--data-root", str(ucm_root), "--out", str(out)])
    code = main(["eval", "--checkpoint", str(out / "last.safetensors"), "--data-root",
                 str(ucm_root), "--split", "dev"])
    assert code == 2 and "Split 'dev'" in capsys.readouterr().err


def test_batches_never_repeat_an_image_and_cover_the_epoch():
    generator = torch.Generator().manual_seed(0)
    batches = list(EpochBatchSampler(10, 4, generator))
    seen = torch.cat(batches).tolist()
    assert sorted(seen) == list(range(10))
    assert all(len(set(b.tolist())) == len(b) for b in batches)


def test_batches_are_split_evenly_across_ranks():
    shards = [list(EpochBatchSampler(10, 4, torch.Generator().manual_seed(0), rank, 2))
              for rank in (0, 1)]
    assert [len(s) for s in shards] == [2, 2]                       # the short batch is dropped
    together = torch.cat([torch.cat(s) for s in shards]).tolist()
    assert len(set(together)) == 8


@pytest.mark.parametrize("n_images, batch_size, world", [(10, 4, 1), (10, 4, 2), (9, 3, 1),
                                                      (5, 4, 1), (101, 100, 4), (7, 8, 2)])
def test_the_sampler_knows_its_length_before_it_draws(n_images, batch_size, world):
    for rank in range(world):
        generator = torch.Generator().manual_seed(0)
        sampler = EpochBatchSampler(n_images, batch_size, generator, rank, world)
        before = generator.get_state()
        steps = len(sampler)
        assert torch.equal(generator.get_state(), before)          # len draws nothing
        assert steps == len(list(sampler))


def test_each_pass_of_the_sampler_is_a_new_seeded_epoch():
    def two_epochs(seed):
        sampler = EpochBatchSampler(12, 4, torch.Generator().manual_seed(seed))
        return [torch.cat(list(sampler)).tolist() for _ in range(2)]

    first, second = two_epochs(3)
    assert first != second and sorted(first) == sorted(second) == list(range(12))
    assert two_epochs(3) == [first, second]


def test_training_pairs_are_a_torch_dataset_indexed_by_a_batch(ucm_root, tmp_path):
    from ssjdn.training.batches import TrainingPairs
    from ssjdn.training.config import load_training_config
    from ssjdn.training.datasets import load_dataset
    from ssjdn.training.distributed import Distributed

    cfg = load_training_config(tiny_config())
    dataset = load_dataset(ucm_root, "train")
    pairs = TrainingPairs(cfg, dataset, None, tmp_path, Distributed(), print,
                          torch.Generator().manual_seed(0))
    assert isinstance(pairs, torch.utils.data.Dataset) and len(pairs) == len(dataset)
    batch = pairs[torch.tensor([4, 1])]
    assert batch.pixels.shape == (2, 3, cfg["augment"]["crop"], cfg["augment"]["crop"])
    assert batch.features is None
    assert batch.captions[0] in dataset.captions[4] and batch.captions[1] in dataset.captions[1]
    assert batch.labels.tolist() == [dataset.labels[4], dataset.labels[1]]


def test_identical_captions_are_not_each_others_negatives():
    mask = negative_mask_for(["There is a farm .", "A road", "there is a farm."], "cpu")
    assert mask.tolist() == [[False, True, False], [True, False, True], [False, True, False]]


def test_training_captions_reach_the_model_as_real_tokens(tiny_model):
    # A tokenizer that maps every word to [UNK] trains without error but learns nothing.
    ids = tiny_model.tokenize(["many planes at the airport", "a dense residential area"])
    words = ids["input_ids"][ids["attention_mask"].bool()].tolist()
    assert len(set(words)) >= 8


def test_cli_train_stops_cleanly_on_sigterm_and_says_how_to_resume(ucm_root, tmp_path, capsys, monkeypatch):
    import os
    import signal

    import ssjdn.training.train as train_module
    from ssjdn.core.cli.main import main

    real_train = train_module.train

    def train_then_terminated(*args, progress=None, cancel=None, **kwargs):
        def on_event(event):
            if event["event"] == "step" and event["epoch"] == 2:
                os.kill(os.getpid(), signal.SIGTERM)   # what a scheduler or the app sends
        return real_train(*args, progress=on_event, cancel=cancel, **kwargs)

    monkeypatch.setattr(train_module, "train", train_then_terminated)
    handler_before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    code = main(["train", "--config", str(TINY_CONFIG), "--data-root", str(ucm_root), "--out", str(out),
                 "--epochs", "3"])
    assert code == 1
    assert "--resume" in capsys.readouterr().out
    assert read_checkpoint_metadata(out / "last.safetensors")["extra"]["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) is handler_before   # the previous handler is back
