"""Semantic-guided Triple Loss (STL) and the LSD classification term.

STL is a bidirectional hinge triplet loss over the hardest in-batch negatives (VSE++) whose
margin is set per negative: a negative of the anchor's own category is semantically close, so it
gets the smaller margin m * (1 - kappa). kappa is generated from the batch each step: where the
same-category negatives sit between the different-category negatives and the positives,

    kappa = (mean S[same-cat negatives] - mean S[diff-cat negatives])
            / (mean S[positives]         - mean S[diff-cat negatives]),

clamped to [kappa_min, kappa_max] and detached. With `stl` off every margin is m (plain VSE++).

`loss.stl_similarity: captions` replaces the 0/1 "same category" by a graded caption
similarity w_ij in [0, 1] (word-set Jaccard of the two captions, `caption_similarity`): the
margin is m * (1 - kappa * w_ij) and kappa's "same-category mean" becomes the w-weighted mean
(the far mean (1 - w)-weighted). With w = the same-label indicator this is exactly the label
rule, so labels are the special case; captions also order negatives inside one class
("two planes" vs "a runway" in an airport class) and need no labels at all.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn


class SemanticTripleLoss(nn.Module):
    def __init__(self, cfg: dict, switches: dict[str, bool]):
        super().__init__()
        self.margin = float(cfg.get("margin", 0.2))
        self.kappa_min = float(cfg.get("kappa_min", 0.1))
        self.kappa_max = float(cfg.get("kappa_max", 0.9))
        self.ce_weight = float(cfg.get("ce_weight", 0.5))
        # Optional InfoNCE term over all negatives; 0 keeps the paper's pure triplet objective.
        self.infonce_weight = float(cfg.get("infonce_weight", 0.0))
        self.temperature = float(cfg.get("temperature", 0.05))
        # SEM supervision (0 = off): class CE on each SEM-pooled clue, and a penalty on the
        # mean SEM value so that a map stays low where nothing needs keeping.
        self.sem_weight = float(cfg.get("sem_weight", 0.0))
        self.sem_sparsity = float(cfg.get("sem_sparsity", 0.0))
        self.use_stl = switches.get("stl", True)
        self.use_lsd = switches.get("lsd", True)
        self.similarity_source = str(cfg.get("stl_similarity", "labels"))
        if self.similarity_source not in ("labels", "captions"):
            raise ValueError(f"loss.stl_similarity must be 'labels' or 'captions', "
                             f"not {self.similarity_source!r}.")

    def margins(self, scores: torch.Tensor, labels: torch.Tensor | None,
                similarity: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair margins [B, B] and the batch constant kappa (0 when not applicable).

        `similarity` [B, B] in [0, 1] (caption similarity) replaces the same-label indicator."""
        full = torch.full_like(scores, self.margin)
        kappa = scores.new_zeros(())
        if not self.use_stl or (labels is None and similarity is None):
            return full, kappa
        if similarity is None:
            labelled = labels >= 0
            similarity = ((labels[:, None] == labels[None, :]) & labelled[:, None]
                          & labelled[None, :]).to(scores.dtype)
        off_diagonal = ~torch.eye(len(scores), dtype=torch.bool, device=scores.device)
        near = similarity.to(scores.dtype) * off_diagonal
        far = (1.0 - similarity.to(scores.dtype)) * off_diagonal
        if near.sum() > 0 and far.sum() > 0:
            s = scores.detach()
            positive = s.diagonal().mean()
            far_mean = (far * s).sum() / far.sum()
            kappa = ((near * s).sum() / near.sum() - far_mean) / (positive - far_mean).clamp_min(1e-6)
        kappa = kappa.clamp(self.kappa_min, self.kappa_max)
        return full * (1.0 - kappa * near), kappa

    def triplet(self, scores, margins, negative_mask):
        """Sum of the two directions' hardest-negative hinge, averaged over anchors."""
        positives = scores.diagonal()
        valid = ~torch.eye(len(scores), dtype=torch.bool, device=scores.device)
        if negative_mask is not None:
            valid &= negative_mask
        cost_i2t = (margins + scores - positives[:, None]).clamp_min(0).masked_fill(~valid, 0)
        cost_t2i = (margins + scores - positives[None, :]).clamp_min(0).masked_fill(~valid, 0)
        return cost_i2t.max(1).values.mean() + cost_t2i.max(0).values.mean()

    def forward(self, out, labels: torch.Tensor | None = None,
                negative_mask: torch.Tensor | None = None, captions: list[str] | None = None):
        scores = out.img_emb @ out.txt_emb.T
        similarity = None
        if self.similarity_source == "captions" and captions is not None:
            similarity = caption_similarity(captions).to(scores.device)
        margins, kappa = self.margins(scores, labels, similarity)
        parts = {"triplet": self.triplet(scores, margins, negative_mask), "kappa": kappa}
        loss = parts["triplet"]
        if self.infonce_weight > 0:
            parts["infonce"] = infonce(scores / self.temperature, negative_mask)
            loss = loss + self.infonce_weight * parts["infonce"]
        if self.use_lsd and out.img_logits is not None and labels is not None and (labels >= 0).any():
            known = labels >= 0  # unlabeled samples are masked out of the CE term
            parts["image_ce"] = F.cross_entropy(out.img_logits[known].float(), labels[known])
            parts["text_ce"] = F.cross_entropy(out.txt_logits[known].float(), labels[known])
            loss = loss + self.ce_weight * (parts["image_ce"] + parts["text_ce"])
        if self.sem_weight > 0 and out.sem_logits is not None and labels is not None and (labels >= 0).any():
            known = labels >= 0
            clue_logits = out.sem_logits[known].float()          # [b, 6, K]
            clue_labels = labels[known, None].expand(-1, clue_logits.shape[1])
            parts["sem_ce"] = F.cross_entropy(clue_logits.flatten(0, 1), clue_labels.flatten())
            loss = loss + self.sem_weight * parts["sem_ce"]
        if self.sem_sparsity > 0 and out.sem_mean is not None:
            parts["sem_mass"] = out.sem_mean.float().mean()
            loss = loss + self.sem_sparsity * parts["sem_mass"]
        return loss, parts


# Words that say nothing about a scene's content ("there is a ... in the ...").
_STOPWORDS = frozenset("""a an the of in on at to and or is are was be been there here it its
this that these those with by near next some many lots lot several which while as for from into
very also can we see""".split())


def caption_words(caption: str) -> frozenset[str]:
    """Content words of a caption, lower case, a plural 's' stripped ("planes" -> "plane")."""
    words = re.findall(r"[a-z]+", caption.lower())
    return frozenset(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
                     for w in words if w not in _STOPWORDS)


def caption_similarity(captions: list[str]) -> torch.Tensor:
    """[B, B] Jaccard similarity of the captions' content-word sets, in [0, 1]."""
    sets = [caption_words(c) for c in captions]
    vocab = {w: i for i, w in enumerate(sorted(set().union(*sets)))}
    onehot = torch.zeros(len(sets), max(len(vocab), 1))
    for row, words in enumerate(sets):
        onehot[row, [vocab[w] for w in words]] = 1.0
    shared = onehot @ onehot.T
    sizes = onehot.sum(1)
    union = sizes[:, None] + sizes[None, :] - shared
    return torch.where(union > 0, shared / union.clamp_min(1), torch.ones_like(union))


def infonce(logits: torch.Tensor, negative_mask: torch.Tensor | None) -> torch.Tensor:
    if negative_mask is not None:
        keep = negative_mask | torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
