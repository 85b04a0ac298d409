"""The benchmark registry: a benchmark is one class, and everything that names datasets asks it."""
import argparse

import pytest

from caption_fixtures import write_image, write_labels_csv
from ssjdn.core.errors import UserError
from ssjdn.training import benchmarks, commands
from ssjdn.training.benchmarks import Benchmark, benchmark, benchmark_names, register_benchmark
from ssjdn.training.datasets import load_dataset


def cli_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    return parser


def test_the_four_benchmarks_are_registered_with_their_titles_and_protocol():
    assert benchmark_names() == ["ucm", "sydney", "rsicd", "rsitmd"]
    assert [benchmark(n).title for n in benchmark_names()] == [
        "UCM-Captions", "Sydney-Captions", "RSICD", "RSITMD"]
    assert all(benchmark(n).folds == 1 for n in benchmark_names())
    with pytest.raises(UserError, match="'coco'.*ucm, sydney, rsicd, rsitmd"):
        benchmark("coco")


@pytest.mark.parametrize("command", ["eval", "calibrate"])
def test_the_cli_offers_exactly_the_registered_benchmarks(command):
    subcommand = cli_parser()._subparsers._group_actions[0].choices[command]
    dataset = next(a for a in subcommand._actions if a.dest == "dataset")
    assert list(dataset.choices) == benchmark_names()


class BeachesAndForests(Benchmark):
    """A benchmark only this test knows: its labels come from its own word list, 2 folds."""

    name, title, folds = "coastal", "Coastal-Captions", 2

    def categories(self, all_names):
        return ["beach", "forest"]

    def label(self, name, captions, categories):
        return 0 if name.startswith("beach") else 1


@pytest.fixture
def coastal_root(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks, "_BENCHMARKS", dict(benchmarks._BENCHMARKS))
    register_benchmark(BeachesAndForests)
    root = tmp_path / "coastal"
    rows = [(f"{kind}_{i}.jpg", "test", label) for i in range(2)
            for label, kind in enumerate(("beach", "forest"))]
    write_labels_csv(root, "coastal", rows)
    for name, _, label in rows:
        write_image(root / "images" / name, label, seed=len(name))
    return root


def test_a_new_benchmark_is_one_registered_class(coastal_root, tmp_path, tiny_model):
    from ssjdn.core.model.api import save_checkpoint
    from ssjdn.training.evaluate import evaluate_checkpoint

    test = load_dataset(coastal_root, "test")     # the name is found from the csv's file name
    assert test.name == "coastal" and test.categories == ["beach", "forest"]
    assert test.labels == [0, 1, 0, 1]
    args = cli_parser().parse_args(["eval", "--checkpoint", "m.safetensors", "--data-root", "d",
                                    "--dataset", "coastal"])
    assert args.dataset == "coastal"
    checkpoint = save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
    report = evaluate_checkpoint(checkpoint, coastal_root, "test", report=tmp_path / "r.json",
                                 device="cpu", log=lambda message: None)
    assert report["dataset"] == "coastal" and report["folds"] == 2   # its protocol


def test_eval_of_a_missing_folder_says_so_whatever_the_benchmark(tmp_path, tiny_model, capsys):
    from ssjdn.core.cli.main import main
    from ssjdn.core.model.api import save_checkpoint

    checkpoint = save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")   # names no dataset
    missing = tmp_path / "nowhere"
    assert main(["eval", "--checkpoint", str(checkpoint), "--data-root", str(missing)]) == 2
    assert f"Dataset folder {missing} does not exist" in capsys.readouterr().err
