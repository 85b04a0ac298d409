#!/usr/bin/env python3
"""Writes this folder: a tiny RSICD in its published layout (docs/training.md).

- rsicd_labels_splits.csv: one row per image (filename, split train / val / test, label,
  5 sentences as a list literal). Most names are <category>_<number>.jpg; some are purely
  numeric (00017.jpg) and have no category by the file-name rule, whatever their label column
  says.
- images/*.jpg.
- precomp_amfmn/: the AMFMN text files: train = the csv's train and val, one line per image;
  test = the csv's test, one line per caption.

Run from the repository root: python tests/data/rsicd/data.py [OUT] (default: this folder).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # tests/, for caption_fixtures
from caption_fixtures import write_csv_benchmark  # noqa: E402

# (file name, split, the csv's label, what its captions name)
IMAGES = [("airport_1.jpg", "train", "airport", "airport"),
          ("farmland_2.jpg", "train", "farmland", "farmland"),
          ("00017.jpg", "train", "playfields", "playground"),
          ("beach_3.jpg", "train", "beach", "beach"),
          ("airport_4.jpg", "val", "airport", "airport"),
          ("00021.jpg", "val", "bareland", "bare land"),
          ("beach_5.jpg", "test", "beach", "beach"),
          ("farmland_6.jpg", "test", "farmland", "farmland")]


def write(root: Path) -> None:
    write_csv_benchmark(root, "rsicd", IMAGES)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
