"""Retrieval metrics with the peers' protocol (AMFMN, GaLR, SWAN, ...), aware of ties.

Each image has 5 captions. Image-to-text: the rank of the best-ranked of the image's own
captions among all captions. Text-to-image: the rank of the caption's image among all images.
R@K is the percentage of queries whose rank is below K; mR is the mean of the six R@K.

UCM repeats captions word for word, and identical captions get identical scores, so where a
query's answer lands among its tied candidates decides many hits. Three ways to count:
- expected (the headline, used to pick the best epoch): the expected R@K when tied candidates
  come in a uniformly random order, computed exactly (hit_probability);
- pessimistic: every tied competitor ranks ahead of the query's answer;
- plain: a stable sort breaks ties by candidate order, as the peers' sort-based code does (the
  numbers this project reported before; they change when the captions are listed in another
  order).
Tied means: scores within TIE_EPS of each other, or captions with the same text (for
image-to-text, each caption's score is the best score of its text, so two copies of a sentence
encoded in different batches tie even if float noise split them).
"""
from __future__ import annotations

import torch

RECALL_KS = (1, 5, 10)
TIE_EPS = 1e-6
TIE_MODES = ("expected", "pessimistic", "plain")


# ---------------------------------------------------------------------------- plain ranks

def _rank_positions(scores: torch.Tensor) -> torch.Tensor:
    """rank_of[q, c] = position (0 = top) of candidate c in query q's ranking; ties broken
    by candidate order with a stable sort (the "plain" numbers)."""
    order = scores.argsort(dim=1, descending=True, stable=True)
    rank_of = torch.empty_like(order)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    rank_of.scatter_(1, order, positions)
    return rank_of


def _own_captions(scores: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """own[i, c]: caption c describes image i."""
    image_ids = torch.arange(scores.shape[0], device=scores.device).unsqueeze(1)
    return caption_image.unsqueeze(0) == image_ids


def image_to_text_ranks(scores: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """Rank (0 = top) of each image's best caption. scores: [n_images, n_captions]."""
    rank_of = _rank_positions(scores)
    not_own = torch.full_like(rank_of, scores.shape[1])
    return torch.where(_own_captions(scores, caption_image), rank_of, not_own).min(dim=1).values


def text_to_image_ranks(scores: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """Rank (0 = top) of each caption's image among all images."""
    rank_of = _rank_positions(scores.t())                    # [n_captions, n_images]
    return rank_of.gather(1, caption_image.unsqueeze(1)).squeeze(1)


def recall_at(ranks: torch.Tensor, k: int) -> float:
    return float((ranks < k).float().mean().item() * 100.0)


# ---------------------------------------------------------------------------- ties

def _tie_stats(scores: torch.Tensor, relevant: torch.Tensor, eps: float):
    """Per query (row): candidates strictly better than its best relevant one, candidates tied
    with it (itself included), and how many of those tied ones are relevant."""
    best = scores.masked_fill(~relevant, float("-inf")).max(dim=1, keepdim=True).values
    better = (scores > best + eps).sum(dim=1)
    tied = (scores - best).abs() <= eps
    return better, tied.sum(dim=1), (tied & relevant).sum(dim=1)


def _merge_identical_captions(scores: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Give every caption the best score of its text in each row: copies of one sentence tie."""
    keys = [" ".join(str(c).split()) for c in captions]
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    if len(ids) == len(keys):
        return scores
    groups = torch.tensor([ids[k] for k in keys], device=scores.device)
    index = groups.unsqueeze(0).expand_as(scores)
    best = torch.full((scores.shape[0], len(ids)), float("-inf"), dtype=scores.dtype,
                      device=scores.device)
    best = best.scatter_reduce(1, index, scores, reduce="amax")
    return best.gather(1, index)


def image_to_text_tie_stats(scores: torch.Tensor, caption_image: torch.Tensor,
                            captions: list[str] | None = None, eps: float = TIE_EPS):
    """(n_better, n_tied, n_relevant_tied) per image; see _tie_stats."""
    scores = scores.double()
    if captions is not None:
        scores = _merge_identical_captions(scores, captions)
    return _tie_stats(scores, _own_captions(scores, caption_image.to(scores.device)), eps)


def text_to_image_tie_stats(scores: torch.Tensor, caption_image: torch.Tensor,
                            eps: float = TIE_EPS):
    """(n_better, n_tied, 1) per caption: its image among all images."""
    per_caption = scores.double().t()                        # [n_captions, n_images]
    relevant = torch.zeros_like(per_caption, dtype=torch.bool)
    relevant.scatter_(1, caption_image.to(per_caption.device).unsqueeze(1), True)
    return _tie_stats(per_caption, relevant, eps)


def hit_probability(n_better: torch.Tensor, n_tied: torch.Tensor, n_relevant: torch.Tensor,
                    k: int, pessimistic: bool = False) -> torch.Tensor:
    """P(the first relevant candidate is in the top k) when the n_tied tied candidates (of which
    n_relevant are relevant) come in a uniformly random order after n_better better ones.

    With t = k - n_better places left for the tied group, the first relevant one misses them
    all with probability C(n_tied - t, r) / C(n_tied, r) = prod_i (n_tied - t - i) / (n_tied - i).
    Pessimistic: all n_tied - r tied competitors first, a hit iff t > n_tied - r."""
    places = (k - n_better).clamp(min=0).double()
    tied, relevant = n_tied.double(), n_relevant.double()
    if pessimistic:
        return (places > tied - relevant).double()
    miss = torch.ones_like(places)
    for i in range(int(n_relevant.max().item()) if n_relevant.numel() else 0):
        factor = ((tied - places - i) / (tied - i).clamp(min=1)).clamp(min=0)
        miss = torch.where(relevant > i, miss * factor, miss)
    return 1.0 - miss


# ---------------------------------------------------------------------------- metrics

def _default_owners(scores: torch.Tensor, caption_image, captions_per_image: int):
    if caption_image is None:
        caption_image = torch.arange(scores.shape[0]).repeat_interleave(captions_per_image)
    caption_image = caption_image.to(scores.device)
    if caption_image.numel() != scores.shape[1]:
        raise ValueError(f"{scores.shape[1]} caption columns but {caption_image.numel()} "
                         "caption-to-image entries")
    return caption_image


def _with_mean(recalls: dict[str, float]) -> dict[str, float]:
    return {**recalls, "mR": sum(recalls.values()) / len(recalls)}


def retrieval_metrics(scores: torch.Tensor, caption_image: torch.Tensor | None = None,
                      captions_per_image: int = 5, captions: list[str] | None = None,
                      ties: str = "expected") -> dict[str, float]:
    """R@1/5/10 both ways and mR from an image x caption score matrix, ties counted the
    `ties` way (expected | pessimistic | plain; see the module doc).

    caption_image[c] is the image index of caption c; by default captions are image-major,
    captions_per_image each (the layout CaptionDataset.all_captions uses). captions, the
    caption texts, make identical sentences tie (not used by plain).
    """
    if ties not in TIE_MODES:
        raise ValueError(f"ties must be one of {TIE_MODES}, not {ties!r}")
    scores = scores.float()
    if not bool(torch.isfinite(scores).all()):
        # NaN compares false with everything: the ranks (and so the recalls) would be made up.
        from ssjdn.core.errors import UserError
        raise UserError("The model's scores include NaN or infinite values, so its retrieval "
                        "metrics mean nothing: its weights are broken (a training run that "
                        "diverged?). Evaluate another checkpoint.")
    caption_image = _default_owners(scores, caption_image, captions_per_image)
    if captions is not None and len(captions) != scores.shape[1]:
        raise ValueError(f"{scores.shape[1]} caption columns but {len(captions)} captions")
    result = {}
    if ties == "plain":
        directions = {"i2t": image_to_text_ranks(scores, caption_image),
                      "t2i": text_to_image_ranks(scores, caption_image)}
        for name, ranks in directions.items():
            for k in RECALL_KS:
                result[f"{name}_R@{k}"] = recall_at(ranks, k)
        return _with_mean(result)
    directions = {"i2t": image_to_text_tie_stats(scores, caption_image, captions),
                  "t2i": text_to_image_tie_stats(scores, caption_image)}
    for name, stats in directions.items():
        for k in RECALL_KS:
            hits = hit_probability(*stats, k, pessimistic=ties == "pessimistic")
            result[f"{name}_R@{k}"] = float(hits.mean().item() * 100.0)
    return _with_mean(result)


def kfold_metrics(scores: torch.Tensor, folds: int, captions_per_image: int = 5,
                  captions: list[str] | None = None, ties: str = "expected"
                  ) -> dict[str, float]:
    """Average of retrieval_metrics over `folds` equal consecutive blocks of images (the
    COCO 5x1K style); folds=1 is the whole split."""
    if folds <= 1:
        return retrieval_metrics(scores, captions_per_image=captions_per_image,
                                 captions=captions, ties=ties)
    size = n = scores.shape[0] // folds
    per_fold = []
    for f in range(folds):
        rows = slice(f * size, (f + 1) * size)
        cols = slice(f * n * captions_per_image, (f + 1) * n * captions_per_image)
        per_fold.append(retrieval_metrics(scores[rows, cols],
                                          captions_per_image=captions_per_image,
                                          captions=captions[cols] if captions else None,
                                          ties=ties))
    return {key: sum(m[key] for m in per_fold) / folds for key in per_fold[0]}


def all_metrics(scores: torch.Tensor, folds: int = 1, captions_per_image: int = 5,
                captions: list[str] | None = None,
                caption_image: torch.Tensor | None = None) -> dict[str, float]:
    """One flat dict: the expected (tie-aware) metrics under their plain names ("mR", ...),
    then the same with a "_pessimistic" and a "_plain" suffix, for comparison."""
    result: dict[str, float] = {}
    for ties in TIE_MODES:
        if caption_image is not None:
            metrics = retrieval_metrics(scores, caption_image, captions=captions, ties=ties)
        else:
            metrics = kfold_metrics(scores, folds, captions_per_image, captions, ties)
        suffix = "" if ties == "expected" else f"_{ties}"
        result.update({f"{key}{suffix}": value for key, value in metrics.items()})
    return result


def format_metrics(metrics: dict[str, float]) -> str:
    i2t = " ".join(f"R@{k} {metrics[f'i2t_R@{k}']:.2f}" for k in RECALL_KS)
    t2i = " ".join(f"R@{k} {metrics[f't2i_R@{k}']:.2f}" for k in RECALL_KS)
    text = f"image->text {i2t} | text->image {t2i} | mR {metrics['mR']:.2f}"
    others = [f"{ties} {metrics[f'mR_{ties}']:.2f}" for ties in TIE_MODES[1:]
              if f"mR_{ties}" in metrics]
    return text + (f" (ties: expected; mR {', '.join(others)})" if others else "")
