"""Retrieval metrics against hand-computed values (5 captions per image, peers' protocol)."""
import pytest
import torch

from ssjdn.training.metrics import (image_to_text_ranks, kfold_metrics, retrieval_metrics,
                                    text_to_image_ranks)


def caption_owner(n_images, per_image=5):
    return torch.arange(n_images).repeat_interleave(per_image)


def test_perfect_model_scores_100_everywhere():
    scores = torch.eye(6).repeat_interleave(5, dim=1)  # each image matches only its captions
    metrics = retrieval_metrics(scores)
    assert metrics == {key: 100.0 for key in metrics}


def test_known_permutation_gives_known_ranks():
    # Image i's captions score highest with image perm[i]; so caption of image i ranks
    # its own image at position `shift` when scores fall off with (j - i) mod n.
    n = 12
    shift = 3
    image_index = torch.arange(n).unsqueeze(1)
    caption_image = caption_owner(n)
    distance = (caption_image.unsqueeze(0) - image_index - shift) % n   # 0 = best
    scores = -distance.float()
    t2i = text_to_image_ranks(scores, caption_image)
    # For caption of image c, image j scores -( (c - j - shift) mod n ): best j = c - shift,
    # own image j = c has distance (-shift) mod n = n - shift -> rank n - shift.
    assert torch.equal(t2i, torch.full((n * 5,), n - shift))
    i2t = image_to_text_ranks(scores, caption_image)
    # For image i the best captions are those of image i + shift (5 of them, ranks 0-4);
    # its own captions have distance n - shift, after (n - shift) images' 5 captions each.
    assert torch.equal(i2t, torch.full((n,), 5 * (n - shift)))
    metrics = retrieval_metrics(scores)
    assert metrics["t2i_R@1"] == 0.0 and metrics["t2i_R@10"] == 100.0   # rank 9 < 10
    assert metrics["i2t_R@10"] == 0.0                                  # rank 45


def test_image_to_text_counts_the_best_of_the_five_captions():
    scores = torch.zeros(2, 10)
    scores[0, 4] = 1.0      # image 0: its 5th caption is the top match
    scores[0, 5] = 0.5      # then a caption of image 1
    scores[1, 0] = 0.9      # image 1: a caption of image 0 first,
    scores[1, 9] = 0.8      # then its own last caption -> rank 1
    ranks = image_to_text_ranks(scores, caption_owner(2))
    assert ranks.tolist() == [0, 1]
    metrics = retrieval_metrics(scores)
    assert metrics["i2t_R@1"] == 50.0 and metrics["i2t_R@5"] == 100.0


def test_mean_recall_is_the_mean_of_the_six_recalls():
    torch.manual_seed(0)
    metrics = retrieval_metrics(torch.randn(20, 100))
    six = [v for k, v in metrics.items() if k != "mR"]
    assert len(six) == 6
    assert metrics["mR"] == pytest.approx(sum(six) / 6)


def test_ties_are_broken_by_candidate_order_deterministically():
    # Identical captions give identical scores; the earlier caption wins the tie.
    scores = torch.ones(2, 10)
    ranks = image_to_text_ranks(scores, caption_owner(2))
    assert ranks.tolist() == [0, 5]


def test_kfold_averages_independent_blocks():
    perfect = torch.eye(4).repeat_interleave(5, dim=1)
    scores = perfect.clone()
    scores[2:, 10:] = 1.0 - perfect[2:, 10:]   # fold 2 is wrong everywhere
    folded = kfold_metrics(scores, folds=2)
    assert folded["i2t_R@1"] == pytest.approx(50.0)
    assert folded["t2i_R@1"] == pytest.approx(50.0)
    assert kfold_metrics(perfect, folds=1)["mR"] == 100.0


def test_wrong_caption_count_is_rejected():
    with pytest.raises(ValueError):
        retrieval_metrics(torch.zeros(3, 14))
