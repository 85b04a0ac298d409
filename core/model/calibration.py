"""Match likelihood: a model's cosine score turned into how often a tile at that score matches.

A cosine score means little on its own (the shipped model's scores run from about -0.3 to 0.35,
and the best tile of a query is always "the best", even when nothing matches). A calibration
maps a score to the observed rate of matches at that score on captioned images the model did
not train on: on UCM-Captions' val split, a pair (image, caption) matches when the caption was
written for an image of the same kind (one of the 21 classes). It is Platt scaling, a logistic
curve in the score, so it is monotone and has an inverse (a likelihood threshold is a score
threshold). The figures depend on the mix of kinds in that split (1 pair in 21 matches): read
a likelihood as "on imagery like UCM's, tiles scoring this high matched this often".

A checkpoint's calibration lives beside it as `<stem>.calibration.json` and carries the
sha256 of the checkpoint file it was fitted for; a checkpoint that changed since has none.
`ssjdn calibrate` fits one (training/calibrate.py); tests fit tiny synthetic ones.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ssjdn.core.errors import UserError
from ssjdn.core.files import atomic_path, file_sha256

CALIBRATION_SUFFIX = ".calibration.json"
FORMAT_VERSION = 1
ECE_BINS = 10
# A tile is a good match at this likelihood or above (more likely a match than not): the app's
# default threshold for drawing hits, and where `ssjdn search` says "no good match".
GOOD_MATCH = 0.5


@dataclass(frozen=True)
class Calibration:
    slope: float
    intercept: float
    model_sha256: str = ""
    fitted_on: str = ""                 # e.g. "ucm val: 210 images x 1050 captions"
    heldout_ece: float | None = None    # expected calibration error on pairs the fit did not use
    heldout_ece_above_01: float | None = None   # the same over pairs of likelihood >= 0.1
    check_ece: float | None = None      # the same on another split (e.g. ucm test), if measured
    check_split: str = ""

    def likelihood(self, scores):
        """Match likelihood in [0, 1] of one score or an array of scores."""
        values = 1.0 / (1.0 + np.exp(-(self.slope * np.asarray(scores, np.float64) + self.intercept)))
        return float(values) if np.ndim(values) == 0 else values

    def score_at(self, likelihood: float) -> float:
        """The score whose likelihood is `likelihood` (the inverse of `likelihood`)."""
        p = min(max(float(likelihood), 1e-9), 1 - 1e-9)
        return (math.log(p / (1 - p)) - self.intercept) / self.slope

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT_VERSION, "method": "platt", **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Calibration":
        data = json.loads(text)
        if data.get("format") != FORMAT_VERSION or data.get("method") != "platt":
            raise ValueError(f"unknown calibration format {data.get('format')}/{data.get('method')}")
        fields = cls.__dataclass_fields__
        return cls(**{key: value for key, value in data.items() if key in fields})


def fit_calibration(scores, matches) -> tuple[float, float]:
    """(slope, intercept) of P(match | score) = sigmoid(slope * score + intercept)."""
    from sklearn.linear_model import LogisticRegression
    scores = np.asarray(scores, np.float64).reshape(-1, 1)
    matches = np.asarray(matches, bool).reshape(-1)
    if matches.all() or not matches.any():
        raise UserError("A calibration needs both matching and non-matching pairs; the split "
                        "given has only one kind (are its images labelled with their class?).")
    # Nearly unregularised: two parameters and hundreds of thousands of pairs.
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(scores, matches)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def expected_calibration_error(likelihoods, matches, bins: int = ECE_BINS,
                               min_likelihood: float = 0.0) -> float:
    """Mean |predicted - observed| over equal-width likelihood bins, weighted by pair count.

    Most pairs of a split do not match and sit in the lowest bin, where the error is tiny;
    `min_likelihood` (e.g. 0.1) measures it over the pairs a user would look at only."""
    table = [row for row in reliability_table(likelihoods, matches, bins) if row["low"] >= min_likelihood]
    total = sum(row["pairs"] for row in table)
    return float(sum(row["pairs"] * abs(row["predicted"] - row["observed"]) for row in table) / total)


def reliability_table(likelihoods, matches, bins: int = ECE_BINS) -> list[dict]:
    """Per non-empty bin: its range, pair count, mean likelihood and observed match rate."""
    likelihoods = np.asarray(likelihoods, np.float64).reshape(-1)
    matches = np.asarray(matches, bool).reshape(-1)
    which = np.minimum((likelihoods * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append({"low": b / bins, "high": (b + 1) / bins, "pairs": int(inside.sum()),
                         "predicted": float(likelihoods[inside].mean()),
                         "observed": float(matches[inside].mean())})
    return rows


def same_kind(image_labels, caption_labels) -> np.ndarray:
    """bool [n_images, n_captions]: the caption was written for an image of the image's kind
    (labels < 0, unknown kinds, never match)."""
    images = np.asarray(image_labels).reshape(-1, 1)
    captions = np.asarray(caption_labels).reshape(1, -1)
    return (images == captions) & (images >= 0)


def stratified_folds(labels, folds: int = 2) -> np.ndarray:
    """Fold number per item, each kind spread evenly over the folds (deterministic)."""
    labels = np.asarray(labels)
    fold = np.zeros(len(labels), np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        fold[members] = np.arange(len(members)) % folds
    return fold


def cross_fitted(scores, image_labels, caption_image, folds: int = 2):
    """Held-out likelihoods and matches of a score matrix [n_images, n_captions] whose caption c
    belongs to image caption_image[c]: the images are split into folds by kind; each fold's
    pairs (its images with its own images' captions) are scored by a fit on the other folds'
    pairs, so no pair, image or caption scored was seen by the fit that scored it.
    Returns (likelihoods, matches) of all held-out pairs, flattened."""
    scores = np.asarray(scores, np.float64)
    image_labels = np.asarray(image_labels)
    caption_image = np.asarray(caption_image)
    fold_of_image = stratified_folds(image_labels, folds)
    caption_labels = image_labels[caption_image]
    matches = same_kind(image_labels, caption_labels)
    out_p, out_m = [], []
    for fold in range(folds):
        held_img, held_cap = fold_of_image == fold, fold_of_image[caption_image] == fold
        fit_img, fit_cap = ~held_img, ~held_cap
        slope, intercept = fit_calibration(scores[np.ix_(fit_img, fit_cap)], matches[np.ix_(fit_img, fit_cap)])
        held = Calibration(slope, intercept)
        out_p.append(held.likelihood(scores[np.ix_(held_img, held_cap)]).reshape(-1))
        out_m.append(matches[np.ix_(held_img, held_cap)].reshape(-1))
    return np.concatenate(out_p), np.concatenate(out_m)


# -- files ------------------------------------------------------------------------------------

def calibration_path(checkpoint) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + CALIBRATION_SUFFIX)


def save_calibration(calibration: Calibration, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(calibration.to_json(), encoding="utf-8")
    return path


def load_for_checkpoint(checkpoint) -> Calibration | None:
    """The calibration fitted for exactly this checkpoint file, or None (none beside it, one
    for other weights, or one that cannot be read: the app then shows raw scores only)."""
    path = calibration_path(checkpoint)
    if not path.is_file():
        return None
    try:
        calibration = Calibration.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    if calibration.model_sha256 != file_sha256(checkpoint):
        return None
    return calibration


def calibration_of(model) -> Calibration | None:
    """The calibration load_model attached to a model (None for configs and uncalibrated ones)."""
    return getattr(model, "calibration", None)
