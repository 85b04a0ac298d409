"""Tiny datasets written in each benchmark's published format, for the training tests.

Each image is a small solid-colour picture with noise, its colour set by its class, so that
even the `tiny` model can tell classes apart; captions name the class and repeat across
images (as UCM's do) to exercise the identical-caption negative mask.
The writers of the three caption formats (write_karpathy_json, write_labels_csv_rows,
write_precomp_split) also write the committed fixtures under tests/data/<benchmark>/.
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
    lossless = {"lossless": True} if path.suffix == ".webp" else {}   # as UCM's shared copy
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, **lossless)


def captions_for(label: int, index: int) -> list[str]:
    return describe(CLASS_WORDS[label % 3], index)


def describe(word: str, index: int) -> list[str]:
    """Five captions of one image that name `word`; the first three repeat across images."""
    return [f"There is a {word} .", f"It is a {word} here .", f"A picture of a {word} .",
            f"Some {word} number {index} .", f"The {word} seen from above {index} ."]


def write_karpathy_json(path: Path, title: str, images: list[tuple[str, str, list[str]]]) -> None:
    """dataset_<name>.json as UCM-/Sydney-Captions publish it, from (filename, split, captions)."""
    records, sentid = [], 0
    for imgid, (filename, split, caps) in enumerate(images):
        sentences = [{"tokens": c.split(), "raw": c, "imgid": imgid, "sentid": sentid + i}
                     for i, c in enumerate(caps)]
        records.append({"sentids": list(range(sentid, sentid + len(caps))), "imgid": imgid,
                        "sentences": sentences, "split": split, "filename": filename})
        sentid += len(caps)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": records, "dataset": title}))


def write_precomp_split(folder: Path, caps_file: str, names_file: str, names: list[str],
                        captions: list[list[str]], per_caption: bool) -> None:
    """One split of the AMFMN text files: 5 caption lines per image, and the file list with
    one line per image or (the peers' test files) one per caption."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / caps_file).write_text("\n".join(c for caps in captions for c in caps) + "\n")
    listed = [name for name, caps in zip(names, captions)
              for _ in range(len(caps) if per_caption else 1)]
    (folder / names_file).write_text("\n".join(listed) + "\n")


def write_labels_csv_rows(path: Path, rows: list[tuple[str, str, str, list[str]]]) -> None:
    """<name>_labels_splits.csv as RSICD/RSITMD publish it, from (filename, split, label,
    captions): an unnamed index column, img_id, sent_id and the sentences as a list literal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "filename", "img_id", "split", "label", "sent_id", "sentence"])
        for index, (filename, split, label, caps) in enumerate(rows):
            writer.writerow([index, filename, index, split, label,
                             str(list(range(index * 5, index * 5 + 5))), str(caps)])


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
    images = []
    for split, nums in numbers.items():
        for n in nums:
            label = (n - 1) // 100
            images.append((f"{n}.tif", split, captions_for(label, n)))
            write_image(root / "images" / f"{n}{suffix}", label, seed=n)
    write_karpathy_json(root / "dataset_ucm.json", "ucm", images)
    return numbers


def write_precomp(root: Path, names_by_split: dict[str, list[str]], labels: dict[str, int],
                  per_caption_names: tuple[str, ...] = ("test",)) -> None:
    """precomp_amfmn/<split>_caps.txt (5 lines per image) + <split>_filename.txt."""
    for split, names in names_by_split.items():
        captions = [captions_for(labels[name], index) for index, name in enumerate(names)]
        write_precomp_split(root / "precomp_amfmn", f"{split}_caps.txt", f"{split}_filename.txt",
                            names, captions, per_caption=split in per_caption_names)


def write_labels_csv(root: Path, name: str, rows: list[tuple[str, str, int]]) -> None:
    """<name>_labels_splits.csv rows of (filename, split, label index)."""
    write_labels_csv_rows(root / f"{name}_labels_splits.csv",
                          [(filename, split, filename.split("_")[0], captions_for(label, index))
                           for index, (filename, split, label) in enumerate(rows)])


def write_csv_benchmark(root: Path, name: str, images: list[tuple[str, str, str, str]],
                        blank_caption: tuple[str, int] | None = None) -> None:
    """RSICD / RSITMD as published: <name>_labels_splits.csv, images/ and precomp_amfmn/,
    from (file name, split, the csv's label, what the captions name). The precomp train is the
    csv's train and val, one line per image; its test is the csv's test, one line per caption.
    blank_caption (file name, caption index) empties that line of the precomp train file only,
    as 20 lines of RSITMD's are."""
    captions = {file: describe(words, index) for index, (file, _, _, words) in enumerate(images)}
    write_labels_csv_rows(root / f"{name}_labels_splits.csv",
                          [(file, split, label, captions[file]) for file, split, label, _ in images])
    for index, (file, _, _, _) in enumerate(images):
        write_image(root / "images" / file, index, seed=index, size=16)
    for precomp, splits, per_caption in (("train", ("train", "val"), False),
                                         ("test", ("test",), True)):
        files = [file for file, split, _, _ in images if split in splits]
        chosen = [list(captions[file]) for file in files]
        if blank_caption and precomp == "train":
            chosen[files.index(blank_caption[0])][blank_caption[1]] = ""
        write_precomp_split(root / "precomp_amfmn", f"{precomp}_caps.txt",
                            f"{precomp}_filename.txt", files, chosen, per_caption)
