"""`ssjdn calibrate`: fit a checkpoint's match likelihood on a captioned split it did not train on.

The fitting itself is core's (ssjdn.core.model.calibration); this reads the split, scores every
(image, caption) pair with the checkpoint, measures the expected calibration error on pairs a
fit did not use (cross-fitting over two folds of images), fits on the whole split and writes
`<checkpoint stem>.calibration.json` beside the checkpoint, where load_model finds it.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ssjdn.core.files import file_sha256
from ssjdn.core.model.calibration import (Calibration, calibration_path, cross_fitted,
                                    expected_calibration_error, fit_calibration,
                                    reliability_table, same_kind, save_calibration)
from ssjdn.core.errors import UserError


def split_scores(model, data_root, split: str, dataset_name: str | None, test_size=None):
    """(scores [n_images, n_captions], image labels, caption -> image) of one split."""
    from ssjdn.training.augment import load_images
    from ssjdn.training.datasets import load_dataset
    from ssjdn.training.evaluate import score_matrix
    dataset = load_dataset(data_root, split, name=dataset_name)   # None: told from the files
    labels = np.asarray(dataset.labels)
    if (labels < 0).all():
        raise UserError(f"The {split} split of {data_root} has no image classes, so no pair can be "
                        "called a match; calibrate on a labelled benchmark (UCM, RSICD, RSITMD).")
    scores = score_matrix(model, dataset, images=load_images(dataset.image_paths), test_size=test_size)
    caption_image = np.repeat(np.arange(len(dataset)), [len(c) for c in dataset.captions])
    return scores.numpy().astype(np.float64), labels, caption_image, dataset.name


def calibrate_checkpoint(checkpoint, data_root, split: str = "val", check_split: str | None = None,
                         dataset_name: str | None = None, device=None, log=print) -> Calibration:
    from ssjdn.core.model.api import load_model
    checkpoint = Path(checkpoint)
    model = load_model(checkpoint, device=device)
    train_cfg = (getattr(model, "checkpoint_extra", {}) or {}).get("train_config") or {}
    test_size = (train_cfg.get("augment") or {}).get("test_size")
    name = dataset_name or train_cfg.get("dataset")
    scores, labels, caption_image, name = split_scores(model, data_root, split, name, test_size)
    held_p, held_m = cross_fitted(scores, labels, caption_image)
    heldout_ece = expected_calibration_error(held_p, held_m)
    ece_above = expected_calibration_error(held_p, held_m, min_likelihood=0.1)
    log(f"{name} {split}: {scores.shape[0]} images x {scores.shape[1]} captions; expected "
        f"calibration error on held-out pairs (2-fold cross-fitting): {heldout_ece:.4f} "
        f"({ece_above:.4f} over the pairs of likelihood >= 0.1)")
    _log_table(reliability_table(held_p, held_m), log)
    slope, intercept = fit_calibration(scores, same_kind(labels, labels[caption_image]))
    calibration = Calibration(slope, intercept, file_sha256(checkpoint),
                              f"{name} {split}: {scores.shape[0]} images x {scores.shape[1]} captions",
                              round(heldout_ece, 4), round(ece_above, 4))
    if check_split:
        c_scores, c_labels, c_caption_image, _ = split_scores(model, data_root, check_split, name, test_size)
        c_p = calibration.likelihood(c_scores)
        c_m = same_kind(c_labels, c_labels[c_caption_image])
        check_ece = expected_calibration_error(c_p, c_m)
        log(f"{name} {check_split} with the fit on {split}: expected calibration error {check_ece:.4f}")
        _log_table(reliability_table(c_p, c_m), log)
        calibration = replace(calibration, check_ece=round(check_ece, 4),
                              check_split=f"{name} {check_split}")
    target = calibration_path(checkpoint)
    save_calibration(calibration, target)
    log(f"likelihood = 1 / (1 + exp(-({slope:.3f} * score + {intercept:.3f}))); "
        f"0.5 at score {calibration.score_at(0.5):+.3f}; written to {target}")
    return calibration


def _log_table(rows, log) -> None:
    log("  likelihood bin   pairs     mean likelihood  observed match rate")
    for row in rows:
        log(f"  {row['low']:.1f}-{row['high']:.1f}      {row['pairs']:8d}  {row['predicted']:.3f}"
            f"            {row['observed']:.3f}")
