"""Tiny datasets written in each benchmark's published format, for the training tests.

Each image is a small solid-colour picture with noise, its colour set by its class, so that
even the `tiny` model can tell classes apart; captions name the class and repeat across
images (as UCM's do) to exercise the identical-caption negative mask.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

TINY_CONFIG = Path(__file__).resolve().parent.parent / "training" / "configs" / "tiny.yaml"


def tiny_config(**changes) -> dict:
    """The tiny training config as a dict, with `changes` applied on top."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config.update(changes)
    return config

CLASS_COLOURS = {0: (200, 180, 60), 1: (90, 90, 100), 2: (30, 120, 40)}
CLASS_WORDS = {0: "farmland", 1: "airplane", 2: "baseball field"}


def write_image(path: Path, label: int, seed: int, size: int = 32) -> None:
    rng = np.random.default_rng(seed)
    base = np.array(CLASS_COLOURS[label % 3], dtype=np.int16)
    pixels = base + rng.integers(-25, 25, size=(size, size, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)


def captions_for(label: int, index: int) -> list[str]:
    word = CLASS_WORDS[label % 3]
    return [f"There is a {word} .", f"It is a {word} here .", f"A picture of a {word} .",
            f"Some {word} number {index} .", f"The {word} seen from above {index} ."]


def ucm_numbers(per_split: dict[str, int]) -> dict[str, list[int]]:
    """UCM file numbers per split, spread over classes 0-2 ((N - 1) // 100)."""
    numbers, counter = {}, 0
    for split, count in per_split.items():
        numbers[split] = []
        for _ in range(count):
            label = counter % 3
            numbers[split].append(label * 100 + 1 + counter)
            counter += 1
    return numbers


def write_ucm_json(root: Path, per_split=None, suffix: str = ".png") -> dict[str, list[int]]:
    """dataset_ucm.json (Karpathy style) + images/N<suffix>; the json says N.tif."""
    per_split = per_split or {"train": 8, "val": 4, "test": 4}
    numbers = ucm_numbers(per_split)
    images, sentid = [], 0
    for split, nums in numbers.items():
        for n in nums:
            label = (n - 1) // 100
            caps = captions_for(label, n)
            sentences = [{"raw": c, "tokens": c.split(), "sentid": sentid + i, "imgid": n - 1}
                         for i, c in enumerate(caps)]
            images.append({"filename": f"{n}.tif", "split": split, "imgid": n - 1,
                           "sentids": list(range(sentid, sentid + 5)), "sentences": sentences})
            sentid += 5
            write_image(root / "images" / f"{n}{suffix}", label, seed=n)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_ucm.json").write_text(json.dumps({"images": images, "dataset": "ucm"}))
    return numbers


def write_precomp(root: Path, names_by_split: dict[str, list[str]], labels: dict[str, int],
                  per_caption_names: tuple[str, ...] = ("test",)) -> None:
    """precomp_amfmn/<split>_caps.txt (5 lines per image) + <split>_filename.txt."""
    folder = root / "precomp_amfmn"
    folder.mkdir(parents=True, exist_ok=True)
    for split, names in names_by_split.items():
        caps, listed = [], []
        for index, name in enumerate(names):
            caps += captions_for(labels[name], index)
            listed += [name] * (5 if split in per_caption_names else 1)
        (folder / f"{split}_caps.txt").write_text("\n".join(caps) + "\n")
        (folder / f"{split}_filename.txt").write_text("\n".join(listed) + "\n")


def write_labels_csv(root: Path, name: str, rows: list[tuple[str, str, int]]) -> None:
    """<name>_labels_splits.csv rows of (filename, split, label index)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}_labels_splits.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "filename", "img_id", "split", "label", "sent_id", "sentence"])
        for index, (filename, split, label) in enumerate(rows):
            caps = captions_for(label, index)
            writer.writerow([index, filename, index, split, filename.split("_")[0],
                             str(list(range(index * 5, index * 5 + 5))), str(caps)])
