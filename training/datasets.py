"""Readers for the image-caption benchmarks (benchmarks.py) in their published formats.

Formats (any dataset may come in any of them; the reader picks what the folder holds):
- Karpathy-style ``dataset_<name>.json`` (UCM-Captions, Sydney-Captions, RSICD): a list of
  images with ``filename``, ``split`` and ``sentences[].raw``.
- ``<name>_labels_splits.csv`` (RSICD, RSITMD): one row per image with ``filename``, ``split``,
  ``label`` and ``sentence`` (a Python-literal list of the 5 sentences); labels come from the
  benchmark's rule, not from the ``label`` column.
- The AMFMN/GaLR/SWAN precomputed text files in ``precomp_amfmn/`` (or the root):
  ``<split>_caps.txt`` (5 lines per image) and ``<split>_filename.txt`` (one line per image, or
  one per caption as the peers' test files have it).

What differs between the benchmarks (the categories, how an image gets its label, the
evaluation protocol) is their class in benchmarks.py; this module reads what they share.
Images are looked up by file stem, so ``12.tif`` in a caption file finds ``images/12.webp``.
"""
from __future__ import annotations

import ast
import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ssjdn.core.errors import UserError
from ssjdn.training.benchmarks import benchmark, benchmark_names

CAPTIONS_PER_IMAGE = 5
IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".webp")
CAPTION_FORMATS = ("json", "csv", "precomp")   # in the order "auto" tries them


@dataclass
class CaptionDataset:
    """One split of a benchmark: images, their 5 captions each, and category labels."""

    name: str
    split: str
    image_names: list[str]            # as written in the caption file, e.g. "12.tif"
    captions: list[list[str]]         # CAPTIONS_PER_IMAGE per image
    labels: list[int]                 # index into categories, -1 = no label
    categories: list[str]
    image_paths: list[Path] = field(default_factory=list)  # resolved by stem; empty until found

    def __len__(self) -> int:
        return len(self.image_names)

    @property
    def all_captions(self) -> list[str]:
        """Captions flattened image-major: caption c of image i is at i * 5 + c."""
        return [c for caps in self.captions for c in caps]


def _detect_dataset_name(root: Path) -> str:
    """Guess the benchmark from the folder's files (dataset_ucm.json, rsitmd_labels_...)."""
    text = " ".join(p.name.lower() for p in _candidate_files(root)) + " " + root.name.lower()
    for name in benchmark_names():
        if name in text:
            return name
    raise UserError(f"Cannot tell which benchmark {root} holds; set `dataset:` to one of "
                    f"{', '.join(benchmark_names())} in the training config.")


def load_dataset(root: str | Path, split: str, name: str | None = None,
                 fmt: str = "auto", require_images: bool = True) -> CaptionDataset:
    """Read one split from a dataset folder; fmt is auto, json, csv or precomp."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"Dataset folder {root} is not a folder; give the folder that holds the "
                        "caption file and images/.")
    if not root.is_dir():
        raise UserError(f"Dataset folder {root} does not exist.")
    name = name or _detect_dataset_name(root)
    labelling = benchmark(name)
    fmt = _pick_format(root, fmt)
    readers = {"json": _read_karpathy_json, "csv": _read_labels_csv, "precomp": _read_precomp}
    image_names, captions, all_names = readers[fmt](root, split)
    _check_caption_counts(image_names, captions, root, split)
    categories, labels = labelling.labels(image_names, captions, all_names)
    dataset = CaptionDataset(name, split, image_names, captions, labels, categories)
    if require_images:
        dataset.image_paths = find_images(root, image_names)
    return dataset


# ---------------------------------------------------------------------------- formats

def _candidate_files(root: Path) -> list[Path]:
    files = list(root.glob("*.json")) + list(root.glob("*.csv"))
    for folder in (root, root / "precomp_amfmn"):
        files += list(folder.glob("*_caps*.txt")) if folder.is_dir() else []
    return files


def _pick_format(root: Path, fmt: str) -> str:
    found = {
        "json": bool(list(root.glob("dataset*.json"))),
        "csv": bool(list(root.glob("*_labels_splits.csv"))),
        "precomp": _precomp_dir(root) is not None,
    }
    if fmt == "auto":
        for candidate in CAPTION_FORMATS:
            if found[candidate]:
                return candidate
        raise UserError(f"No caption files in {root}: expected dataset_<name>.json, "
                        "<name>_labels_splits.csv or precomp_amfmn/<split>_caps.txt.")
    if fmt not in found:
        raise UserError(f"Unknown dataset format {fmt!r}; use auto, json, csv or precomp.")
    if not found[fmt]:
        raise UserError(f"Format {fmt!r} asked for, but {root} has no such caption files.")
    return fmt


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a UTF-8 text file; is it the benchmark's caption "
                        "file?") from None
    except OSError as exc:
        raise UserError(f"Cannot read {path}: {exc.strerror or exc}.") from None


KARPATHY_SHAPE = ('{"images": [{"filename": ..., "split": ..., "sentences": [{"raw": ...}, ...]}, '
                  '...]}')


def _read_karpathy_json(root: Path, split: str):
    path = sorted(root.glob("dataset*.json"))[0]
    try:
        data = json.loads(_read_text(path))
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}).") from None
    records = data.get("images") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise UserError(f"{path} has no list of images; a Karpathy-style caption file reads "
                        f"{KARPATHY_SHAPE}.")
    for number, record in enumerate(records, 1):
        _check_karpathy_record(path, number, record)
    _check_split(split, {r["split"] for r in records}, path)
    chosen = [r for r in records if r["split"] == split]
    names = [r["filename"] for r in chosen]
    captions = [[s["raw"].strip() for s in r["sentences"]] for r in chosen]
    return names, captions, [r["filename"] for r in records]


def _check_karpathy_record(path: Path, number: int, record) -> None:
    """A KeyError deep in training would name neither the file nor the image: check here."""
    if not isinstance(record, dict):
        raise UserError(f"{path}: image {number} is not an object; the file should read "
                        f"{KARPATHY_SHAPE}.")
    name = record.get("filename")
    where = f"{path}: image {number}" + (f" ({name})" if isinstance(name, str) else "")
    for key, kind in (("filename", str), ("split", str), ("sentences", list)):
        if not isinstance(record.get(key), kind):
            problem = "has no" if key not in record else "has a malformed"
            raise UserError(f"{where} {problem} {key!r}; every image needs filename, split and "
                            "sentences[].raw.")
    for index, sentence in enumerate(record["sentences"], 1):
        if not isinstance(sentence, dict) or not isinstance(sentence.get("raw"), str):
            raise UserError(f"{where}: sentence {index} has no 'raw' text; every sentence "
                            "needs one.")


LABELS_CSV_COLUMNS = ("filename", "split", "sentence")


def _read_labels_csv(root: Path, split: str):
    path = sorted(root.glob("*_labels_splits.csv"))[0]
    reader = csv.DictReader(_read_text(path).splitlines())
    missing = [c for c in LABELS_CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path} has no column {missing[0]!r}; a labels csv needs the columns "
                        f"{', '.join(LABELS_CSV_COLUMNS)} (label optional).")
    rows = list(reader)
    _check_split(split, {r["split"] for r in rows}, path)
    chosen = [r for r in rows if r["split"] == split]
    captions = []
    for row in chosen:
        try:
            captions.append([str(s).strip() for s in ast.literal_eval(row["sentence"] or "")])
        except (ValueError, SyntaxError, TypeError) as exc:
            raise UserError(f"{path}: the sentences of {row['filename']} are not a list "
                            f"literal ({exc}).") from None
    return [r["filename"] for r in chosen], captions, [r["filename"] for r in rows]


def _precomp_dir(root: Path) -> Path | None:
    for folder in (root / "precomp_amfmn", root):
        if folder.is_dir() and list(folder.glob("*_caps*.txt")):
            return folder
    return None


def _precomp_paths(folder: Path, split: str) -> tuple[Path, Path]:
    # Sydney also ships train/val "_verify" files: split "val_verify" reads val_caps_verify.txt.
    if split.endswith("_verify"):
        base = split[: -len("_verify")]
        return folder / f"{base}_caps_verify.txt", folder / f"{base}_filename_verify.txt"
    return folder / f"{split}_caps.txt", folder / f"{split}_filename.txt"


def _precomp_splits(folder: Path) -> set[str]:
    splits = set()
    for path in folder.glob("*_caps*.txt"):
        match = re.fullmatch(r"(.+)_caps(_verify)?\.txt", path.name)
        if match:
            splits.add(match.group(1) + (match.group(2) or ""))
    return splits


def _read_lines(path: Path) -> list[str]:
    # Blank lines inside are kept: RSITMD's train_caps.txt has 20 empty captions, and
    # dropping them would shift every later caption onto the wrong image.
    lines = [line.strip() for line in _read_text(path).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _read_precomp(root: Path, split: str):
    folder = _precomp_dir(root)
    _check_split(split, _precomp_splits(folder), folder)
    caps_path, names_path = _precomp_paths(folder, split)
    if not names_path.exists():
        raise UserError(f"{caps_path} has no matching file list {names_path.name}.")
    captions_flat, names = _read_lines(caps_path), _read_lines(names_path)
    if len(names) == len(captions_flat):
        # The peers' test files list the image once per caption: fold 5 lines into one.
        names = _fold_per_caption_names(names, names_path)
    if len(captions_flat) != CAPTIONS_PER_IMAGE * len(names):
        raise UserError(
            f"{caps_path.name} has {len(captions_flat)} lines for {len(names)} images in "
            f"{names_path.name}; expected {CAPTIONS_PER_IMAGE} captions per image.")
    captions = [captions_flat[i:i + CAPTIONS_PER_IMAGE]
                for i in range(0, len(captions_flat), CAPTIONS_PER_IMAGE)]
    all_names = []
    for other in sorted(_precomp_splits(folder)):
        other_names = _read_lines(_precomp_paths(folder, other)[1])
        all_names += other_names
    return names, captions, all_names


def _fold_per_caption_names(names: list[str], path: Path) -> list[str]:
    if len(names) % CAPTIONS_PER_IMAGE:
        raise UserError(f"{path.name} lists {len(names)} captions, not a multiple of "
                        f"{CAPTIONS_PER_IMAGE}.")
    folded = []
    for i in range(0, len(names), CAPTIONS_PER_IMAGE):
        group = set(names[i:i + CAPTIONS_PER_IMAGE])
        if len(group) != 1:
            raise UserError(f"{path.name} line {i + 1}: the {CAPTIONS_PER_IMAGE} caption lines "
                            f"of one image name different files: {sorted(group)}.")
        folded.append(names[i])
    return folded


def _check_split(split: str, available: set[str], source: Path) -> None:
    if split not in available:
        raise UserError(f"Split {split!r} is not in {source}; it has: "
                        f"{', '.join(sorted(available)) or 'none'}.")


def _check_caption_counts(names: list[str], captions: list[list[str]], root: Path,
                          split: str) -> None:
    for name, caps in zip(names, captions):
        if len(caps) != CAPTIONS_PER_IMAGE:
            raise UserError(f"{root} ({split}): image {name} has {len(caps)} captions; every "
                            f"image needs exactly {CAPTIONS_PER_IMAGE}.")
    if not names:
        raise UserError(f"{root}: split {split!r} holds no images.")


# ---------------------------------------------------------------------------- images

IMAGE_FOLDERS = ("images", "imgs", "image")


def image_folder(root: Path) -> Path | None:
    """The first of images/, imgs/, image/ or the root itself that holds image files."""
    for candidate in [root / name for name in IMAGE_FOLDERS] + [root]:
        if candidate.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES
                                      for p in candidate.iterdir()):
            return candidate
    return None


def find_images(root: Path, image_names: list[str]) -> list[Path]:
    """Resolve each caption-file name to an image by stem (.tif/.jpg/.png/.webp all work)."""
    folder = image_folder(root)
    if folder is None:
        raise UserError(f"Found no images folder in {root}: none of "
                        f"{', '.join(n + '/' for n in IMAGE_FOLDERS)} (nor the folder itself) "
                        f"holds {', '.join(IMAGE_SUFFIXES)} files. Put the dataset's images in "
                        f"{root / 'images'}/.")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(path.stem, path)
    missing = [n for n in image_names if Path(n).stem not in by_stem]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserError(f"{len(missing)} of {len(image_names)} images are missing from {folder} "
                        f"(looked up by file stem, any of {', '.join(IMAGE_SUFFIXES)}): {shown}")
    return [by_stem[Path(n).stem] for n in image_names]
