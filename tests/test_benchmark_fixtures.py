"""The committed fixtures under tests/data/<benchmark>/ read as the benchmarks' published files
do, and each folder's data.py writes exactly what is committed."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssjdn.core.errors import UserError
from ssjdn.training.benchmarks import UCM_CLASSES, benchmark_names
from ssjdn.training.datasets import load_dataset

DATA = Path(__file__).resolve().parent / "data"
TEXT_SUFFIXES = (".json", ".csv", ".txt")


def load(name: str, split: str, fmt: str = "auto", **options):
    return load_dataset(DATA / name, split, fmt=fmt, **options)


def files_under(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "data.py" and "__pycache__" not in p.parts}


def assert_same_images_and_captions(first, second):
    assert first.image_names == second.image_names
    assert first.captions == second.captions


@pytest.mark.parametrize("name", benchmark_names())
def test_the_script_writes_exactly_the_committed_fixture(name, tmp_path):
    assert (DATA / name / "data.py").is_file(), \
        f"every benchmark has a fixture: write tests/data/{name}/data.py and run it"
    spec = importlib.util.spec_from_file_location(f"fixture_{name}", DATA / name / "data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.write(tmp_path)
    committed, written = files_under(DATA / name), files_under(tmp_path)
    assert list(written) == list(committed) and committed
    for relative, path in committed.items():
        if path.suffix in TEXT_SUFFIXES:
            assert written[relative].read_bytes() == path.read_bytes(), relative
        else:   # JPEG is lossy: another codec build may round a pixel differently
            ours = np.asarray(Image.open(written[relative]), dtype=np.int16)
            theirs = np.asarray(Image.open(path), dtype=np.int16)
            tolerance = 2 if path.suffix == ".jpg" else 0
            assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= tolerance


def test_ucm_labels_by_image_number_and_its_withheld_test_images():
    train = load("ucm", "train")
    assert train.name == "ucm" and train.categories == UCM_CLASSES
    assert train.image_names == ["1.tif", "102.tif", "205.tif", "2100.tif"]
    assert train.labels == [0, 1, 2, 20]
    assert [p.name for p in load("ucm", "val").image_paths] == ["150.webp", "260.webp"]
    with pytest.raises(UserError, match="2 of 2 images are missing"):
        load("ucm", "test")
    assert load("ucm", "test", require_images=False).labels == [0, 19]
    # The AMFMN files hold the same captions; their "test" is the json's val.
    assert_same_images_and_captions(load("ucm", "train", "precomp"), train)
    assert_same_images_and_captions(load("ucm", "test", "precomp"), load("ucm", "val"))


def test_sydney_labels_are_mined_from_the_captions():
    train, val, test = (load("sydney", split) for split in ("train", "val", "test"))
    # residential, airport, a tie of river and ocean (no label), industrial
    assert train.labels == [0, 1, -1, 5]
    assert val.labels == [2, -1] and test.labels == [4, 6]      # meadow, no class word; ocean, runway
    assert_same_images_and_captions(load("sydney", "test", "precomp"), val)
    # The *_verify files split the json's train in two.
    verify = [load("sydney", split, "precomp") for split in ("train_verify", "val_verify")]
    assert verify[0].image_names + verify[1].image_names == train.image_names
    assert verify[0].captions + verify[1].captions == train.captions


def test_rsicd_labels_by_file_name_prefix_and_numeric_names_have_none():
    train = load("rsicd", "train")
    assert train.name == "rsicd" and train.categories == ["airport", "beach", "farmland"]
    assert train.labels == [0, 2, -1, 1]          # 00017.jpg: none, whatever its csv label
    assert load("rsicd", "val").labels == [0, -1] and load("rsicd", "test").labels == [1, 2]
    precomp_train = load("rsicd", "train", "precomp")
    val = load("rsicd", "val")
    assert precomp_train.image_names == train.image_names + val.image_names
    assert precomp_train.captions == train.captions + val.captions
    assert precomp_train.categories == train.categories
    assert_same_images_and_captions(load("rsicd", "test", "precomp"), load("rsicd", "test"))


def test_rsitmd_keeps_an_empty_caption_line_in_place():
    csv_rows = load("rsitmd", "train").captions + load("rsitmd", "val").captions
    precomp = load("rsitmd", "train", "precomp")
    assert precomp.categories == ["boat", "farmland", "playground", "stadium"]
    assert precomp.labels == [3, 1, 0, 2, 0]
    empty = precomp.image_names.index("farmland_1665.tif")
    assert precomp.captions[empty][2] == ""
    assert precomp.captions[empty][:2] == csv_rows[empty][:2]
    # Every caption after the empty line still belongs to its own image.
    assert precomp.captions[empty + 1:] == csv_rows[empty + 1:]


@pytest.mark.parametrize("name, split", [("ucm", "val"), ("sydney", "test"), ("rsicd", "test"),
                                         ("rsitmd", "test")])
def test_ssjdn_eval_reads_each_committed_benchmark(name, split, tiny_model, tmp_path, capsys):
    from ssjdn.core.cli.main import main
    from ssjdn.core.model.api import save_checkpoint

    checkpoint = save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
    report = tmp_path / "report.json"
    assert main(["eval", "--checkpoint", str(checkpoint), "--data-root", str(DATA / name),
                 "--split", split, "--report", str(report)]) == 0
    assert f"{name} {split} (2 images, 10 captions)" in capsys.readouterr().out
