#!/usr/bin/env python3
"""Writes this folder: a tiny Sydney-Captions in its published layout (docs/training.md).

- dataset_sydney.json: Karpathy style, file names N.tif, splits train / val / test. Sydney
  publishes no class per image: labels are mined from the captions, so the captions here
  name one class, no class ("a green park": no label), or two equally ("a river by the sea":
  a tie, no label).
- images/N.tif: the images (the shared copy has none; the published archive has TIFFs).
- precomp_amfmn/: the AMFMN text files: train; test = the json's val, listed once per
  caption; and the *_verify pair that splits the json's train into train_verify / val_verify.

Run from the repository root: python tests/data/sydney/data.py [OUT] (default: this folder).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # tests/, for caption_fixtures
from caption_fixtures import (describe, write_image, write_karpathy_json,  # noqa: E402
                              write_precomp_split)

# (image number, split, what its captions name, colour class of its picture)
IMAGES = [(1, "train", "residential area with houses", 0), (2, "train", "airport", 1),
          (3, "train", "river by the sea", 2), (4, "train", "industrial area", 0),
          (5, "val", "meadow", 2), (6, "val", "green park", 1), (7, "test", "ocean", 2),
          (8, "test", "runway", 1)]
# precomp files: (caps file, names file, json split, images, one name line per caption?)
PRECOMP = [("train_caps.txt", "train_filename.txt", "train", None, False),
           ("test_caps.txt", "test_filename.txt", "val", None, True),
           ("train_caps_verify.txt", "train_filename_verify.txt", "train", [1, 2, 3], False),
           ("val_caps_verify.txt", "val_filename_verify.txt", "train", [4], False)]


def write(root: Path) -> None:
    captions = {n: describe(words, n) for n, _, words, _ in IMAGES}
    write_karpathy_json(root / "dataset_sydney.json", "Sydney",
                        [(f"{n}.tif", split, captions[n]) for n, split, _, _ in IMAGES])
    for n, _, _, colour in IMAGES:
        write_image(root / "images" / f"{n}.tif", colour, seed=n, size=16)
    for caps_file, names_file, split, chosen, per_caption in PRECOMP:
        numbers = chosen or [n for n, s, _, _ in IMAGES if s == split]
        write_precomp_split(root / "precomp_amfmn", caps_file, names_file,
                            [f"{n}.tif" for n in numbers], [captions[n] for n in numbers],
                            per_caption)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
