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


# ---------------------------------------------------------------- tie-aware recall
# UCM repeats captions word for word, so many candidates tie; the headline numbers are the
# expected R@K under a uniformly random order of the tied candidates.

from ssjdn.training.metrics import (all_metrics, hit_probability, image_to_text_tie_stats,  # noqa: E402
                                    text_to_image_tie_stats)


def test_hand_computed_expected_recall_with_tied_captions():
    scores = torch.zeros(2, 10)
    # Image 0: its caption 0 ties with two captions of image 1 at the top (3 tied, 1 relevant).
    scores[0] = torch.tensor([0.9, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.2, 0.2, 0.2])
    # Image 1: one caption of image 0 is strictly better (0.6); its own best 0.5 ties with
    # three of image 0's captions and its own second caption (5 tied, 2 relevant).
    scores[1] = torch.tensor([0.5, 0.5, 0.5, 0.6, 0.0, 0.5, 0.5, 0.3, 0.3, 0.3])
    owner = caption_owner(2)
    better, tied, relevant = image_to_text_tie_stats(scores, owner)
    assert better.tolist() == [0, 1] and tied.tolist() == [3, 5] and relevant.tolist() == [1, 2]
    # Image 0 at K=1: one of the 3 tied places -> 1/3; at K=2 -> 2/3. Image 1 at K=2: one place
    # left for the 5 tied, P(miss) = (4/5)(3/4) = 3/5 -> 2/5; at K=5 four places, 2 relevant
    # among 5 -> 1.
    assert hit_probability(better, tied, relevant, 1).tolist() == pytest.approx([1 / 3, 0.0])
    assert hit_probability(better, tied, relevant, 2).tolist() == pytest.approx([2 / 3, 2 / 5])
    assert hit_probability(better, tied, relevant, 5).tolist() == pytest.approx([1.0, 1.0])
    # Pessimistic: every tied competitor ranks ahead (image 0 at rank 2, image 1 at rank 4).
    assert hit_probability(better, tied, relevant, 1, pessimistic=True).tolist() == [0.0, 0.0]
    assert hit_probability(better, tied, relevant, 5, pessimistic=True).tolist() == [1.0, 1.0]
    metrics = all_metrics(scores)
    assert metrics["i2t_R@1"] == pytest.approx(100 / 6)            # (1/3 + 0) / 2
    assert metrics["i2t_R@1_pessimistic"] == 0.0
    assert metrics["i2t_R@1_plain"] == 50.0          # the stable sort puts image 0's caption first
    assert metrics["i2t_R@5"] == metrics["i2t_R@10"] == 100.0


def test_hand_computed_expected_recall_text_to_image():
    # One caption per image; caption 0 ties its image with one other, caption 1 with two others.
    scores = torch.tensor([[0.7, 0.3, 0.1],
                           [0.7, 0.3, 0.2],
                           [0.1, 0.3, 0.9]])
    owner = torch.arange(3)
    better, tied, relevant = text_to_image_tie_stats(scores, owner)
    assert better.tolist() == [0, 0, 0] and tied.tolist() == [2, 3, 1]
    assert relevant.tolist() == [1, 1, 1]
    metrics = all_metrics(scores, captions_per_image=1)
    assert metrics["t2i_R@1"] == pytest.approx(100 * (1 / 2 + 1 / 3 + 1) / 3)
    assert metrics["t2i_R@1_pessimistic"] == pytest.approx(100 / 3)
    assert metrics["t2i_R@1_plain"] == pytest.approx(200 / 3)   # caption 1's image loses to 0


def test_identical_caption_strings_tie_even_when_their_scores_differ_slightly():
    captions = [f"caption {i}" for i in range(10)]
    captions[5] = captions[0]                   # image 1 repeats image 0's first caption
    scores = torch.zeros(2, 10)
    scores[0, 0], scores[0, 5] = 0.9, 0.9 + 1e-4    # batched encoding noise, above the epsilon
    scores[1, 5:] = 0.5                             # image 1's own captions lead its row
    plain_strings = all_metrics(scores)
    same_strings = all_metrics(scores, captions=captions)
    assert plain_strings["i2t_R@1"] == 50.0          # by score alone image 0 is beaten
    # Image 0: a coin flip between the two copies. Image 1: image 0's copy now ties with its
    # own 5 captions at the top, 5 of 6 tied relevant -> 5/6.
    assert same_strings["i2t_R@1"] == pytest.approx(100 * (1 / 2 + 5 / 6) / 2)


def test_scores_equal_within_epsilon_are_ties():
    scores = torch.zeros(2, 10)
    scores[0, 0], scores[0, 5] = 0.9, 0.9 + 1e-7
    scores[1, 5:] = 0.5
    assert all_metrics(scores)["i2t_R@1"] == pytest.approx(75.0)


def random_tied_benchmark(seed, n_images=12):
    generator = torch.Generator().manual_seed(seed)
    # Scores on a coarse grid tie often; a few sentences shared across images, as UCM's are.
    scores = torch.randint(0, 4, (n_images, n_images * 5), generator=generator).float() / 4
    sentences = [f"sentence {int(i)}" for i in torch.randint(0, 8, (n_images * 5,),
                                                             generator=generator)]
    for col, sentence in enumerate(sentences):      # identical sentences, identical embeddings
        first = sentences.index(sentence)
        scores[:, col] = scores[:, first]
    return scores, sentences


def test_tie_aware_metrics_do_not_depend_on_the_order_of_images_or_captions():
    scores, sentences = random_tied_benchmark(0)
    n_images = scores.shape[0]
    owner = caption_owner(n_images)
    generator = torch.Generator().manual_seed(1)
    rows = torch.randperm(n_images, generator=generator)
    cols = torch.randperm(n_images * 5, generator=generator)
    new_image_of_old = torch.empty_like(rows)
    new_image_of_old[rows] = torch.arange(n_images)
    shuffled = scores[rows][:, cols]
    shuffled_owner = new_image_of_old[owner[cols]]
    shuffled_sentences = [sentences[c] for c in cols.tolist()]
    before = all_metrics(scores, captions=sentences)
    after = all_metrics(shuffled, caption_image=shuffled_owner, captions=shuffled_sentences)
    for key in before:
        if not key.endswith("_plain"):
            assert after[key] == pytest.approx(before[key], abs=1e-9), key
    # The stable-sort numbers of before depend on the order: this shuffle moves them.
    assert any(after[key] != before[key] for key in before if key.endswith("_plain"))


def test_a_duplicated_caption_ties_whichever_copy_float_noise_favours():
    # Image 1's first caption is a word-for-word copy of image 0's first caption. Encoded in
    # different batches the two copies may differ in the last bits, either way round; the
    # tie-aware result must not depend on which copy that noise favours.
    scores = torch.randn(4, 20, generator=torch.Generator().manual_seed(3))
    sentences = [f"sentence {i}" for i in range(20)]
    sentences[5] = sentences[0]
    scores[0, 0], scores[1, 0] = 3.0, -3.0    # image 0's top match; at image 1's bottom
    noise = 1e-4 * torch.ones(4)
    image0_copy_ahead, image1_copy_ahead = scores.clone(), scores.clone()
    image0_copy_ahead[:, 5] = scores[:, 0] - noise
    image1_copy_ahead[:, 5] = scores[:, 0] + noise
    a = all_metrics(image0_copy_ahead, captions=sentences)
    b = all_metrics(image1_copy_ahead, captions=sentences)
    assert {k: v for k, v in a.items() if not k.endswith("_plain")} == pytest.approx(
        {k: v for k, v in b.items() if not k.endswith("_plain")})
    assert a["i2t_R@1_plain"] != b["i2t_R@1_plain"]    # the score-only ranking flips


def test_pessimistic_never_beats_expected_and_plain_lies_between():
    scores, sentences = random_tied_benchmark(5, n_images=20)
    metrics = all_metrics(scores, captions=sentences)
    for key in ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@10", "mR"):
        assert metrics[f"{key}_pessimistic"] <= metrics[key] + 1e-9
        assert metrics[f"{key}_pessimistic"] <= metrics[f"{key}_plain"] + 1e-9


def test_without_ties_all_three_agree():
    torch.manual_seed(0)
    metrics = all_metrics(torch.randn(20, 100))
    for key in ("i2t_R@1", "i2t_R@10", "t2i_R@5", "mR"):
        assert metrics[key] == pytest.approx(metrics[f"{key}_plain"])
        assert metrics[key] == pytest.approx(metrics[f"{key}_pessimistic"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("ties", ["expected", "pessimistic", "plain"])
def test_scores_that_are_not_finite_are_refused(bad, ties):
    # NaN scores gave "mR 0.00 (pessimistic 100.00, plain 61.11)" for a diverged model.
    from ssjdn.core.errors import UserError
    scores = torch.eye(2).repeat_interleave(5, dim=1)
    scores[0, 3] = bad
    with pytest.raises(UserError, match="NaN or infinite"):
        retrieval_metrics(scores, ties=ties)
