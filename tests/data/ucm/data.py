#!/usr/bin/env python3
"""Writes this folder: a tiny UCM-Captions in its published layout (docs/training.md).

- dataset_ucm.json: Karpathy style, file names N.tif, splits train / val / test; image N is
  class (N - 1) // 100 of the 21 UC Merced classes.
- images/N.webp: lossless WebP of the train and val images only: the shared copy withholds
  the test split's images, so a test can read its captions but not load its images.
- precomp_amfmn/: the AMFMN text files; their "test" is the json's val split, listed once per
  caption. (The published folder's <name>_splits_vocab.json is not read, so not written.)

Run from the repository root: python tests/data/ucm/data.py [OUT] (default: this folder).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # tests/, for caption_fixtures
from caption_fixtures import (describe, write_image, write_karpathy_json,  # noqa: E402
                              write_precomp_split)

# (image number, split, what its captions name)
IMAGES = [(1, "train", "farmland"), (102, "train", "airplane"), (205, "train", "baseball field"),
          (2100, "train", "tennis court"), (150, "val", "airplane"),
          (260, "val", "baseball field"), (33, "test", "farmland"), (1999, "test", "storage tank")]


def write(root: Path) -> None:
    captions = {n: describe(word, n) for n, _, word in IMAGES}
    write_karpathy_json(root / "dataset_ucm.json", "UCM",
                        [(f"{n}.tif", split, captions[n]) for n, split, _ in IMAGES])
    for n, split, _ in IMAGES:
        if split != "test":
            write_image(root / "images" / f"{n}.webp", (n - 1) // 100, seed=n, size=16)
    for precomp, split, per_caption in (("train", "train", False), ("test", "val", True)):
        numbers = [n for n, s, _ in IMAGES if s == split]
        write_precomp_split(root / "precomp_amfmn", f"{precomp}_caps.txt",
                            f"{precomp}_filename.txt", [f"{n}.tif" for n in numbers],
                            [captions[n] for n in numbers], per_caption)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
