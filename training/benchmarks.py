"""The benchmarks by name: one class each, with its categories, its label rule and its protocol.

A new benchmark is one class here, decorated with @register_benchmark: the readers
(datasets.py) accept its name, `ssjdn eval` and `ssjdn calibrate` offer it as a --dataset
choice, and evaluation uses its folds. The caption files of every benchmark come in the
published formats datasets.py reads; what differs between benchmarks is only what is here.

Category labels follow docs/training.md: UCM from the image number, RSICD/RSITMD from the
file-name prefix (purely numeric names have no label, -1), Sydney mined from the captions.
"""
from __future__ import annotations

import re
from pathlib import Path

from ssjdn.core.errors import UserError


class Benchmark:
    """What one image-caption benchmark adds to the shared readers."""

    name = ""     # in training configs, on the command line and in caption file names
    title = ""    # as its paper spells it
    # The usual protocol: results are averaged over this many equal folds of the test split
    # (1: the whole split, as all four remote-sensing benchmarks report).
    folds = 1

    def categories(self, all_names: list[str]) -> list[str]:
        """The category names; all_names holds the image names of every split, so that
        categories found in the names agree between train and test."""
        raise NotImplementedError

    def label(self, name: str, captions: list[str], categories: list[str]) -> int:
        """The category index of one image (name as in the caption file), -1 for none."""
        raise NotImplementedError

    def labels(self, image_names: list[str], captions: list[list[str]],
               all_names: list[str]) -> tuple[list[str], list[int]]:
        categories = self.categories(all_names)
        return categories, [self.label(name, caps, categories)
                            for name, caps in zip(image_names, captions)]


_BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(cls: type[Benchmark]) -> type[Benchmark]:
    _BENCHMARKS[cls.name] = cls()
    return cls


def benchmark_names() -> list[str]:
    """The registered names, in the order they were registered (the order detection tries)."""
    return list(_BENCHMARKS)


def benchmark(name: str) -> Benchmark:
    if name not in _BENCHMARKS:
        raise UserError(f"Unknown dataset {name!r}; expected one of "
                        f"{', '.join(benchmark_names())}.")
    return _BENCHMARKS[name]


class FixedCategories(Benchmark):
    """A benchmark whose categories are a published list, the same for every split."""

    classes: list[str] = []

    def categories(self, all_names):
        return list(self.classes)


def _stem(name: str) -> str:
    return Path(name).stem


# ---------------------------------------------------------------------------- UCM-Captions

# The 21 UC Merced Land Use classes in alphabetical order: image N is class (N - 1) // 100.
UCM_CLASSES = [
    "agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
    "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
    "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river", "runway",
    "sparseresidential", "storagetanks", "tenniscourt",
]


def ucm_label(name: str) -> int:
    """UCM caption file N.tif is class (N - 1) // 100 over the alphabetical classes."""
    stem = _stem(name)
    if not stem.isdigit() or not 1 <= int(stem) <= 100 * len(UCM_CLASSES):
        return -1
    return (int(stem) - 1) // 100


@register_benchmark
class UCMCaptions(FixedCategories):
    name, title, classes = "ucm", "UCM-Captions", UCM_CLASSES

    def label(self, name, captions, categories):
        return ucm_label(name)


# ---------------------------------------------------------------------------- Sydney-Captions

# Sydney-Captions publishes no per-image class, so labels are mined from the captions: each
# caption votes for the classes whose words it mentions; the majority wins, ties give -1.
SYDNEY_CLASSES = ["residential", "airport", "meadow", "river", "ocean", "industrial", "runway"]
SYDNEY_CLASS_WORDS = {
    "residential": ("residential", "house", "houses", "villas"),
    "airport": ("airport", "terminal", "airplane", "airplanes", "plane", "planes", "aircraft"),
    "meadow": ("meadow", "meadows", "grassland", "lawn"),
    "river": ("river", "rivers"),
    "ocean": ("ocean", "sea", "waves", "seawater"),
    "industrial": ("industrial", "factory", "factories", "warehouse", "warehouses"),
    "runway": ("runway", "runways"),
}


def mine_sydney_label(captions: list[str]) -> int:
    """Majority vote of the class words the captions mention; -1 on a tie or no mention."""
    votes = [0] * len(SYDNEY_CLASSES)
    for caption in captions:
        words = set(re.findall(r"[a-z]+", caption.lower()))
        for index, cls in enumerate(SYDNEY_CLASSES):
            if words & set(SYDNEY_CLASS_WORDS[cls]):
                votes[index] += 1
    best = max(votes)
    if best == 0 or votes.count(best) > 1:
        return -1
    return votes.index(best)


@register_benchmark
class SydneyCaptions(FixedCategories):
    name, title, classes = "sydney", "Sydney-Captions", SYDNEY_CLASSES

    def label(self, name, captions, categories):
        return mine_sydney_label(captions)


# ---------------------------------------------------------------------------- RSICD, RSITMD

def prefix_category(name: str) -> str | None:
    """RSICD/RSITMD: the file-name prefix before the first '_'; numeric names have none."""
    stem = _stem(name)
    prefix = stem.split("_")[0].lower()
    if "_" not in stem or not prefix or prefix.isdigit():
        return None
    return prefix


class NamedByPrefix(Benchmark):
    """Images named <category>_<number>: the categories are the prefixes of every split."""

    def categories(self, all_names):
        return sorted({c for c in map(prefix_category, all_names) if c})

    def label(self, name, captions, categories):
        category = prefix_category(name)
        return categories.index(category) if category in categories else -1


@register_benchmark
class RSICD(NamedByPrefix):
    name, title = "rsicd", "RSICD"


@register_benchmark
class RSITMD(NamedByPrefix):
    name, title = "rsitmd", "RSITMD"
