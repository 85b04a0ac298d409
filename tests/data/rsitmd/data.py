#!/usr/bin/env python3
"""Writes this folder: a tiny RSITMD in its published layout (docs/training.md).

- rsitmd_labels_splits.csv: one row per image (filename <category>_<number>.tif, split
  train / val / test, label, 5 sentences as a list literal).
- images/*.tif (the shared copy has none; the published archive has TIFFs).
- precomp_amfmn/: the AMFMN text files: train = the csv's train and val, one line per image,
  with one empty caption line (RSITMD's train_caps.txt has 20, and they must not shift the
  captions after them); test = the csv's test, one line per caption.

Run from the repository root: python tests/data/rsitmd/data.py [OUT] (default: this folder).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # tests/, for caption_fixtures
from caption_fixtures import write_csv_benchmark  # noqa: E402

# RSITMD names every image <category>_<number>.tif, and its label column is that category.
FILES = [("stadium_4272.tif", "train"), ("farmland_1665.tif", "train"), ("boat_0.tif", "train"),
         ("playground_9.tif", "val"), ("boat_12.tif", "val"), ("stadium_7.tif", "test"),
         ("farmland_8.tif", "test")]
# (file name, split, the csv's label, what its captions name)
IMAGES = [(file, split, file.split("_")[0], file.split("_")[0]) for file, split in FILES]
EMPTY_CAPTION = ("farmland_1665.tif", 2)   # its third caption line in precomp train is empty


def write(root: Path) -> None:
    write_csv_benchmark(root, "rsitmd", IMAGES, blank_caption=EMPTY_CAPTION)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
