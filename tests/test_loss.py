"""Semantic-guided Triple Loss: margins from the batch, and the VSE++ fallback."""
import torch
import torch.nn.functional as F

from ssjdn.core.model.loss import SemanticTripleLoss
from ssjdn.core.model.network import ModelOutput

ALL_ON = {"bsd": True, "lsd": True, "stl": True}
ALL_OFF = {"bsd": False, "lsd": False, "stl": False}


def _output(scores_seed=0, n=6, dim=8):
    gen = torch.Generator().manual_seed(scores_seed)
    img = F.normalize(torch.randn(n, dim, generator=gen), dim=1)
    txt = F.normalize(img + 0.8 * torch.randn(n, dim, generator=gen), dim=1)
    return ModelOutput(img, txt)


def vse_pp_hardest_negative(img, txt, margin):
    """VSE++ max-violation loss (Faghri et al.), written out independently, mean over anchors."""
    scores = img @ txt.T
    n = len(scores)
    loss_i2t, loss_t2i = 0.0, 0.0
    for i in range(n):
        loss_i2t += max(max(0.0, margin + scores[i, j].item() - scores[i, i].item()) for j in range(n) if j != i)
        loss_t2i += max(max(0.0, margin + scores[j, i].item() - scores[i, i].item()) for j in range(n) if j != i)
    return (loss_i2t + loss_t2i) / n


def test_same_category_negative_gets_a_smaller_margin_than_a_different_category_one():
    loss = SemanticTripleLoss({"margin": 0.2}, ALL_ON)
    labels = torch.tensor([0, 0, 1, 1, 2, -1])
    scores = torch.eye(6) * 0.8 + 0.1
    scores[0, 1] = scores[1, 0] = scores[2, 3] = scores[3, 2] = 0.5  # same-category pairs are closer
    margins, kappa = loss.margins(scores, labels)
    assert 0 < kappa < 1
    assert margins[0, 1] < margins[0, 2] == 0.2
    assert torch.isclose(margins[0, 1], torch.tensor(0.2) * (1 - kappa))
    # Unlabelled samples keep the full margin against everyone.
    assert torch.all(margins[5] == 0.2) and torch.all(margins[:, 5] == 0.2)


def test_kappa_is_generated_from_the_batch():
    loss = SemanticTripleLoss({"margin": 0.2, "kappa_min": 0.0, "kappa_max": 1.0}, ALL_ON)
    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.full((4, 4), 0.2)
    scores.fill_diagonal_(1.0)
    scores[0, 1] = scores[1, 0] = scores[2, 3] = scores[3, 2] = 0.6
    _, kappa = loss.margins(scores, labels)
    # Same-category negatives sit halfway between other negatives (0.2) and positives (1.0).
    assert torch.isclose(kappa, torch.tensor(0.5))


def test_loss_is_zero_when_positives_win_by_the_margins():
    loss = SemanticTripleLoss({"margin": 0.2, "ce_weight": 0.0}, ALL_ON)
    img = torch.eye(4)
    out = ModelOutput(img, img.clone())  # positives 1, negatives 0: every margin is met
    value, parts = loss(out, torch.tensor([0, 0, 1, 1]))
    assert parts["triplet"] == 0 and value == 0


def test_all_switches_off_equals_the_vse_pp_hardest_negative_loss():
    loss = SemanticTripleLoss({"margin": 0.2}, ALL_OFF)
    out = _output()
    value, _ = loss(out, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert torch.isclose(value, torch.tensor(vse_pp_hardest_negative(out.img_emb, out.txt_emb, 0.2)), atol=1e-6)


def test_stl_without_labels_is_the_plain_triplet_loss():
    out = _output(1)
    with_stl, _ = SemanticTripleLoss({"margin": 0.2}, ALL_ON)(out, None)
    plain, _ = SemanticTripleLoss({"margin": 0.2}, ALL_OFF)(out, None)
    assert torch.isclose(with_stl, plain)


def test_masked_negatives_are_ignored():
    loss = SemanticTripleLoss({"margin": 0.2}, ALL_OFF)
    img = torch.eye(3)
    txt = img.clone()
    txt[1] = img[0]  # caption 1 is identical to caption 0: a false negative for image 0
    out = ModelOutput(img, txt)
    unmasked, _ = loss(out)
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = False
    masked, _ = loss(out, negative_mask=mask)
    assert masked < unmasked


def test_classification_term_skips_unlabelled_samples():
    loss = SemanticTripleLoss({"margin": 0.2, "ce_weight": 1.0}, ALL_ON)
    out = _output(2, n=3)
    out.img_logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [9.0, -9.0]])
    out.txt_logits = out.img_logits.clone()
    _, parts = loss(out, torch.tensor([0, 1, -1]))
    expected = F.cross_entropy(out.img_logits[:2], torch.tensor([0, 1]))
    assert torch.isclose(parts["image_ce"], expected)


def test_caption_similarity_with_the_label_indicator_reproduces_the_label_margins():
    loss = SemanticTripleLoss({"margin": 0.2}, ALL_ON)
    labels = torch.tensor([0, 0, 1, 1, 2, -1])
    scores = torch.eye(6) * 0.8 + 0.1
    scores[0, 1] = scores[1, 0] = scores[2, 3] = scores[3, 2] = 0.5
    by_labels, kappa_labels = loss.margins(scores, labels)
    same = ((labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)).float()
    by_similarity, kappa_similarity = loss.margins(scores, None, similarity=same)
    assert torch.allclose(by_labels, by_similarity) and torch.isclose(kappa_labels, kappa_similarity)


def test_a_more_similar_caption_gets_a_smaller_margin():
    from ssjdn.core.model.loss import caption_similarity
    captions = ["many planes are parked at the airport",
                "several planes parked near the terminal",
                "a long runway with some grass beside it",
                "a piece of green farmland"]
    sim = caption_similarity(captions)
    assert torch.allclose(sim, sim.T) and torch.all(sim.diagonal() == 1)
    assert sim[0, 1] > sim[0, 2] >= sim[0, 3] == 0  # "plane" and "parked" are shared
    loss = SemanticTripleLoss({"margin": 0.2, "stl_similarity": "captions"}, ALL_ON)
    scores = torch.full((4, 4), 0.2).fill_diagonal_(0.9)
    scores[0, 1] = scores[1, 0] = 0.5
    margins, kappa = loss.margins(scores, None, similarity=sim)
    assert kappa > 0
    assert margins[0, 1] < margins[0, 2] <= margins[0, 3] == 0.2


def test_caption_similarity_ignores_filler_words_case_and_plurals():
    from ssjdn.core.model.loss import caption_similarity
    sim = caption_similarity(["There are many Planes .", "a plane", "there is a road"])
    assert sim[0, 1] == 1.0 and sim[0, 2] == 0.0


def test_stl_with_caption_similarity_needs_no_labels():
    loss = SemanticTripleLoss({"margin": 0.2, "stl_similarity": "captions", "ce_weight": 0.0}, ALL_ON)
    img = torch.eye(6)
    txt = torch.eye(6)
    txt[0] = F.normalize(torch.eye(6)[0] + torch.eye(6)[1], dim=0)
    txt[1] = F.normalize(torch.eye(6)[1] + 0.9 * torch.eye(6)[0], dim=0)
    out = ModelOutput(img, txt)  # images 0 and 1 each have the other's caption as hardest negative
    captions = ["two planes", "two planes parked", "a river", "a road", "green trees", "a beach"]
    with_captions, parts = loss(out, None, captions=captions)
    plain, _ = SemanticTripleLoss({"margin": 0.2, "ce_weight": 0.0}, ALL_ON)(out, None)
    assert parts["kappa"] > 0
    assert with_captions < plain  # the similar pair's margin shrank
