"""Retrieval metrics with the peers' protocol (AMFMN, GaLR, SWAN, ...).

Each image has 5 captions. Image-to-text: the rank of the best-ranked of the image's own
captions among all captions. Text-to-image: the rank of the caption's image among all images.
R@K is the percentage of queries whose rank is below K; mR is the mean of the six R@K.
"""
from __future__ import annotations

import torch

RECALL_KS = (1, 5, 10)


def _rank_positions(scores: torch.Tensor) -> torch.Tensor:
    """rank_of[q, c] = position (0 = top) of candidate c in query q's ranking.

    UCM repeats captions verbatim, so exact ties are common; a stable sort breaks them by
    candidate order, deterministically, as the peers' sort-based code does."""
    order = scores.argsort(dim=1, descending=True, stable=True)
    rank_of = torch.empty_like(order)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    rank_of.scatter_(1, order, positions)
    return rank_of


def image_to_text_ranks(scores: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """Rank (0 = top) of each image's best caption. scores: [n_images, n_captions]."""
    rank_of = _rank_positions(scores)
    image_ids = torch.arange(scores.shape[0], device=scores.device).unsqueeze(1)
    own = caption_image.unsqueeze(0) == image_ids
    not_own = torch.full_like(rank_of, scores.shape[1])
    return torch.where(own, rank_of, not_own).min(dim=1).values


def text_to_image_ranks(scores: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """Rank (0 = top) of each caption's image among all images."""
    rank_of = _rank_positions(scores.t())                    # [n_captions, n_images]
    return rank_of.gather(1, caption_image.unsqueeze(1)).squeeze(1)


def recall_at(ranks: torch.Tensor, k: int) -> float:
    return float((ranks < k).float().mean().item() * 100.0)


def retrieval_metrics(scores: torch.Tensor, caption_image: torch.Tensor | None = None,
                      captions_per_image: int = 5) -> dict[str, float]:
    """R@1/5/10 both ways and mR from an image x caption score matrix.

    caption_image[c] is the image index of caption c; by default captions are image-major,
    captions_per_image each (the layout CaptionDataset.all_captions uses).
    """
    scores = scores.float()
    if caption_image is None:
        caption_image = torch.arange(scores.shape[0]).repeat_interleave(captions_per_image)
    caption_image = caption_image.to(scores.device)
    if caption_image.numel() != scores.shape[1]:
        raise ValueError(f"{scores.shape[1]} caption columns but {caption_image.numel()} "
                         "caption-to-image entries")
    i2t = image_to_text_ranks(scores, caption_image)
    t2i = text_to_image_ranks(scores, caption_image)
    result = {}
    for k in RECALL_KS:
        result[f"i2t_R@{k}"] = recall_at(i2t, k)
    for k in RECALL_KS:
        result[f"t2i_R@{k}"] = recall_at(t2i, k)
    result["mR"] = sum(result.values()) / len(result)
    return result


def kfold_metrics(scores: torch.Tensor, folds: int, captions_per_image: int = 5
                  ) -> dict[str, float]:
    """Average of retrieval_metrics over `folds` equal consecutive blocks of images (the
    COCO 5x1K style); folds=1 is the whole split."""
    n_images = scores.shape[0]
    if folds <= 1:
        return retrieval_metrics(scores, captions_per_image=captions_per_image)
    size = n_images // folds
    per_fold = []
    for f in range(folds):
        rows = slice(f * size, (f + 1) * size)
        cols = slice(f * size * captions_per_image, (f + 1) * size * captions_per_image)
        per_fold.append(retrieval_metrics(scores[rows, cols],
                                          captions_per_image=captions_per_image))
    return {key: sum(m[key] for m in per_fold) / folds for key in per_fold[0]}


def format_metrics(metrics: dict[str, float]) -> str:
    i2t = " ".join(f"R@{k} {metrics[f'i2t_R@{k}']:.2f}" for k in RECALL_KS)
    t2i = " ".join(f"R@{k} {metrics[f't2i_R@{k}']:.2f}" for k in RECALL_KS)
    return f"image->text {i2t} | text->image {t2i} | mR {metrics['mR']:.2f}"
