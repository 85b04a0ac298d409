"""Stage what the GPU session (bench/gpu_session.sh, docs/gpu.md) must carry to the device.

The lent machine has torch, transformers and timm but neither our weight packages, rasterio nor
faiss, and reaches no network; a call carries at most 64 MiB, the repository's own files
included. So this script, run here, makes one bundle:
- ucm/: the UCM-Captions train + val images, the source files unchanged (lossless WebP,
  162 MiB; --jpeg-quality shrinks them) and a dataset_ucm.json with those two splits only;
- weights/: EfficientNet-Lite0 in fp16 and MiniLM in fp16 minus its word-embedding table, of
  which only the rows of the tokens the session uses travel (fp32, exact); manifest.json with
  the sha256 of each staged file and of the package file it came from (core/model/pretrained.py);
- wheels/: the cp312 manylinux wheels of rasterio and faiss-cpu and their missing needs;
and cuts it into parts that each fit one call beside the working tree: .gpu_stage/part1,
part2, ... (git-ignored). Each device call carries one part; bench/gpu_session.sh collects
them on the machine and runs the session once all are there.

    .venv/bin/python bench/gpu_stage.py                      # UCM from ../shared, wheels via pip
    .venv/bin/python bench/gpu_stage.py --data-root DIR --wheels DIR --out .gpu_stage
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20
CALL_LIMIT = 64 * MIB
# Pinned as in pyproject.toml; the device has attrs, certifi, click, numpy, packaging and
# pyparsing already (device KINDS.md), so only these travel (Requires-Dist checked).
WHEELS = ["rasterio==1.4.4", "faiss-cpu==1.15.1", "affine==3.0.1", "cligj==0.7.2",
          "click-plugins==1.1.1.2"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sha256_of(path: Path) -> str:
    from ssjdn.core.files import file_sha256   # the same digest the model checks at load
    return file_sha256(path)


# ---------------------------------------------------------------------------- images

def stage_images(data_root: Path, dest: Path, quality: int | None = None,
                 limit: int | None = None) -> dict:
    """Train + val images and their captions; returns counts and bytes.

    By default the source files travel unchanged, so the device trains on the pixels that
    `ssjdn eval` reads here: a model trained on JPEG q90 copies (the first GPU session)
    scored val mR 52.5 on JPEG copies of val but 50.1 on the lossless originals. `quality`
    re-encodes them as JPEG instead (fewer parts, that shift)."""
    from PIL import Image

    source = sorted(data_root.glob("dataset*.json"))
    if not source:
        sys.exit(f"error: no dataset_*.json in {data_root}; give --data-root the UCM folder.")
    data = json.loads(source[0].read_text())
    kept = [r for r in data["images"] if r["split"] in ("train", "val")]
    (dest / "images").mkdir(parents=True, exist_ok=True)
    by_stem = {p.stem: p for p in (data_root / "images").iterdir()}
    total = 0
    for record in kept:
        stem = Path(record["filename"]).stem
        if stem not in by_stem:
            sys.exit(f"error: image {record['filename']} of {source[0]} not in {data_root}/images.")
        if quality is None:
            target = dest / "images" / by_stem[stem].name
            shutil.copyfile(by_stem[stem], target)
        else:
            target = dest / "images" / f"{stem}.jpg"
            with Image.open(by_stem[stem]) as image:
                image.convert("RGB").save(target, "JPEG", quality=quality, subsampling=2)
        total += target.stat().st_size
    if limit is not None and total > limit:
        sys.exit(f"error: the images take {total / MIB:.1f} MiB (> {limit / MIB:.0f}); "
                 "give a lower --jpeg-quality.")
    (dest / source[0].name).write_text(json.dumps({**data, "images": kept}))
    return {"images": len(kept), "bytes": total,
            "quality": "source files" if quality is None else quality,
            "captions": [s["raw"] for r in kept for s in r["sentences"]]}


# ---------------------------------------------------------------------------- weights

def session_vocabulary(captions: list[str]) -> list[str]:
    """Every text the session tokenizes: captions, class names, the benchmark queries."""
    import yaml

    sys.path.insert(0, str(REPO / "bench"))
    from gpu_session import QUERIES

    names = []
    for config in (REPO / "training/configs/ucm.yaml", REPO / "core/model/configs/ssjdn-lite0-minilm.yaml"):
        data = yaml.safe_load(config.read_text())
        names += data.get("category_names") or data.get("categories") or []
    return captions + names + QUERIES + SPECIAL_TOKENS


def stage_weights(dest: Path, texts: list[str]) -> dict:
    """Every entry of the pretrained-weights registry (core/model/pretrained.py), by its
    staging: fp16 EfficientNet-Lite0/1/2, fp16 MiniLM without its vocabulary table + the rows
    `texts` use."""
    from ssjdn.core.model.pretrained import PRETRAINED

    if os.environ.get("SSJDN_WEIGHTS_DIR"):
        sys.exit("error: unset SSJDN_WEIGHTS_DIR: staging reads the pip packages.")
    dest.mkdir(parents=True, exist_ok=True)
    stagings = {"fp16_state_dict": _stage_fp16_state_dict, "fp16_minilm_rows": _stage_fp16_minilm_rows}
    manifest = {weights.package: stagings[weights.staging](dest, name, weights, texts)
                for name, weights in PRETRAINED.items()}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return {"tokens": sum(entry.get("word_rows", 0) for entry in manifest.values()),
            "bytes": sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())}


def _stage_fp16_state_dict(dest: Path, name: str, weights, texts: list[str]) -> dict:
    """A packaged state dict in fp16 without its classifier (which never loads). The recipe
    trains Lite0 and the session compares Lite1 and Lite2 (PLANS["full"]["seeds"]); ~5.8, 8.7,
    10.2 MiB."""
    import torch

    package_file = weights.weights_file()
    state = torch.load(package_file, map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()
            if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
    file = f"{name}_fp16.pt"
    torch.save(half, dest / file)
    return {"file": file, "sha256": sha256_of(dest / file), "package_file": package_file.name,
            "package_sha256": sha256_of(package_file), "dtype": "float16"}


def _stage_fp16_minilm_rows(dest: Path, name: str, weights, texts: list[str]) -> dict:
    """MiniLM in fp16 without its word-embedding table, plus the table's rows of the tokens
    `texts` use (fp32: frozen, so kept exact)."""
    import torch
    from safetensors.torch import load_file, save_file

    from ssjdn.core.model.pretrained import STAGED_WORD_IDS, STAGED_WORD_ROWS
    from ssjdn.core.model.text import WORD_EMBEDDINGS, load_tokenizer

    folder = weights.located()
    (dest / name).mkdir(exist_ok=True)
    for file in ("config.json", "vocab.txt"):
        shutil.copyfile(folder / file, dest / name / file)
    tokenizer = load_tokenizer("minilm")
    ids = sorted({i for text in texts for i in tokenizer(text)["input_ids"]})
    tensors = load_file(str(folder / weights.file))
    table = tensors.pop(WORD_EMBEDDINGS)
    staged = {k: v.half().contiguous() if v.is_floating_point() else v.contiguous()
              for k, v in tensors.items() if not k.startswith("pooler.")}
    staged[STAGED_WORD_IDS] = torch.tensor(ids, dtype=torch.int64)
    staged[STAGED_WORD_ROWS] = table[ids].contiguous()  # fp32: frozen, so kept exact
    file = f"{name}/model_fp16.safetensors"
    save_file(staged, str(dest / file))
    return {"file": file, "sha256": sha256_of(dest / file),
            "package_file": weights.file, "package_sha256": sha256_of(folder / weights.file),
            "dtype": "float16", "word_rows": len(ids)}


# ---------------------------------------------------------------------------- wheels

def stage_wheels(dest: Path, wheels_dir: Path | None, cache: Path) -> dict:
    dest.mkdir(parents=True, exist_ok=True)
    if wheels_dir is None:
        wheels_dir = cache
        cache.mkdir(parents=True, exist_ok=True)
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "--python-version", "3.12", "--implementation",
                        "cp", *platforms, "-d", str(cache), *WHEELS], check=True)
    found = sorted(Path(wheels_dir).glob("*.whl"))
    if not found:
        sys.exit(f"error: no .whl files in {wheels_dir}.")
    for wheel in found:
        shutil.copyfile(wheel, dest / wheel.name)
    return {"wheels": [w.name for w in found], "bytes": sum(w.stat().st_size for w in found),
            "modules": sorted({m for w in found for m in wheel_modules(w)})}


def wheel_modules(wheel: Path) -> set[str]:
    """Top-level import names in a wheel (the session imports each to check the install)."""
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    return {t[:-3] if t.endswith(".py") else t for t in tops
            if not t.endswith((".dist-info", ".data", ".libs")) and (t.endswith(".py") or "." not in t)}


# ---------------------------------------------------------------------------- parts

def tree_bytes(repo: Path) -> int:
    """What every call sends anyway: tracked and untracked-not-ignored files (+ shared/)."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "-co", "--exclude-standard"],
                            check=True, capture_output=True).stdout.split(b"\0")
    total = sum((repo / name.decode()).stat().st_size for name in listed
                if name and (repo / name.decode()).is_file())
    shared = repo / "shared"
    if shared.is_dir():
        total += sum(p.stat().st_size for p in shared.rglob("*") if p.is_file())
    return total


def cut_parts(bundle: Path, out: Path, capacity: int) -> list[dict]:
    """tar the bundle (its contents are compressed already) and cut it into parts."""
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w") as tar:
        tar.add(bundle, arcname="bundle")
    data = blob.getvalue()
    bundle_id = hashlib.sha256(data).hexdigest()
    count = -(-len(data) // capacity)
    size = -(-len(data) // count)  # equal parts, so the last call is not the fullest
    parts = []
    for index in range(count):
        chunk = data[index * size:(index + 1) * size]
        parts.append({"name": f"bundle.tar.{index + 1:02d}", "bytes": len(chunk),
                      "sha256": hashlib.sha256(chunk).hexdigest()})
    index_doc = {"bundle_id": bundle_id, "bytes": len(data), "parts": parts}
    for number, part in enumerate(parts, 1):
        folder = out / f"part{number}"
        folder.mkdir(parents=True)
        (folder / part["name"]).write_bytes(data[(number - 1) * size:number * size])
        (folder / "parts.json").write_text(json.dumps(index_doc, indent=1))
    return parts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/datasets/ucm_captions"),
                        help="the UCM-Captions folder (dataset_ucm.json + images/)")
    parser.add_argument("--out", default=str(REPO / ".gpu_stage"), help="git-ignored output folder")
    parser.add_argument("--wheels", help="take the wheels from this folder (default: pip download)")
    parser.add_argument("--jpeg-quality", type=int,
                        help="re-encode the images as JPEG (default: the source files, lossless)")
    parser.add_argument("--images-limit-mib", type=float, help="refuse images above this size")
    parser.add_argument("--margin-mib", type=float, default=2.0,
                        help="room left in each call beside the tree and the part")
    parser.add_argument("--part-mib", type=float,
                        help="cut parts of at most this size (default: what a call has room for)")
    args = parser.parse_args(argv)
    started = time.time()
    out = Path(args.out).resolve()
    cache = out.parent / (out.name + "_wheel_cache")
    if out.exists():
        shutil.rmtree(out)
    bundle = out / "bundle"
    images = stage_images(Path(args.data_root), bundle / "ucm", args.jpeg_quality,
                          int(args.images_limit_mib * MIB) if args.images_limit_mib else None)
    weights = stage_weights(bundle / "weights", session_vocabulary(images.pop("captions")))
    wheels = stage_wheels(bundle / "wheels", Path(args.wheels) if args.wheels else None, cache)
    (bundle / "bundle.json").write_text(json.dumps({
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "site_modules": wheels.pop("modules"),
        "data": "ucm", "images": images, "weights": weights, "wheels": wheels}, indent=1))
    tree = tree_bytes(REPO)
    capacity = CALL_LIMIT - tree - int(args.margin_mib * MIB)
    if capacity < 4 * MIB:
        sys.exit(f"error: the working tree alone takes {tree / MIB:.1f} MiB of a call's 64.")
    if args.part_mib:
        capacity = min(capacity, int(args.part_mib * MIB))
    parts = cut_parts(bundle, out, capacity)
    shutil.rmtree(bundle)
    print(f"images {images['images']} ({images['quality']}): {images['bytes'] / MIB:.1f} MiB; "
          f"weights {weights['bytes'] / MIB:.1f} MiB ({weights['tokens']} vocabulary rows); "
          f"wheels {wheels['bytes'] / MIB:.1f} MiB")
    print(f"working tree {tree / MIB:.1f} MiB per call; {len(parts)} parts:")
    where = os.path.relpath(out, REPO)
    for number, part in enumerate(parts, 1):
        print(f"  call {number}: carry [\"{where}/part{number}\"]  part {part['bytes'] / MIB:.1f} MiB"
              f" + tree = {(part['bytes'] + tree) / MIB:.1f} MiB")
    print(f"staged in {time.time() - started:.0f} s into {out}")


if __name__ == "__main__":
    main()
