"""Semantic-guided Triple Loss (STL) and the LSD classification term.

STL is a bidirectional hinge triplet loss over the hardest in-batch negatives (VSE++) whose
margin is set per negative: a negative of the anchor's own category is semantically close, so it
gets the smaller margin m * (1 - kappa). kappa is generated from the batch each step: where the
same-category negatives sit between the different-category negatives and the positives,

    kappa = (mean S[same-cat negatives] - mean S[diff-cat negatives])
            / (mean S[positives]         - mean S[diff-cat negatives]),

clamped to [kappa_min, kappa_max] and detached. With `stl` off every margin is m (plain VSE++).
"""
from __future__ import annotations

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
        self.use_stl = switches.get("stl", True)
        self.use_lsd = switches.get("lsd", True)

    def margins(self, scores: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair margins [B, B] and the batch constant kappa (0 when not applicable)."""
        full = torch.full_like(scores, self.margin)
        kappa = scores.new_zeros(())
        if not self.use_stl or labels is None:
            return full, kappa
        labelled = labels >= 0
        same = (labels[:, None] == labels[None, :]) & labelled[:, None] & labelled[None, :]
        off_diagonal = ~torch.eye(len(labels), dtype=torch.bool, device=scores.device)
        same_neg, diff_neg = same & off_diagonal, ~same & off_diagonal
        if same_neg.any() and diff_neg.any():
            s = scores.detach()
            positive = s.diagonal().mean()
            far = s[diff_neg].mean()
            kappa = ((s[same_neg].mean() - far) / (positive - far).clamp_min(1e-6))
        kappa = kappa.clamp(self.kappa_min, self.kappa_max)
        return torch.where(same_neg, full * (1.0 - kappa), full), kappa

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
                negative_mask: torch.Tensor | None = None):
        scores = out.img_emb @ out.txt_emb.T
        margins, kappa = self.margins(scores, labels)
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
        return loss, parts


def infonce(logits: torch.Tensor, negative_mask: torch.Tensor | None) -> torch.Tensor:
    if negative_mask is not None:
        keep = negative_mask | torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
