"""Tile scores that see small objects (issue 16, item 2): candidate scorings measured in-process.

    PYTHONPATH=.pkg .venv/bin/python bench/bench_tile_scores.py [--checkpoint ...]
        [--data-root ../shared/datasets/ucm_captions] [--val-mr] [--threads 2]

On the pasted-object benchmark of bench/bench_find_objects.py (same tiles, same queries, AP per
object), from one forward pass per tile:
* global: the tile embedding, cosine with the query (what `ssjdn search` ranks by);
* region max: the best of 4 quarter regions, or of 9 half-size regions at quarter steps, each
  pooled like the tile (SEM x SSM-weighted clues and LSD over the region's cells) from the same
  pass's local features; mixed with the global score;
* class evidence: global + lambda * sum_k p_text(k) log p_image(k), where p_image is the LSD
  image classifier's distribution over the model's categories (its attention pools each
  category's evidence wherever it lies in the tile) and p_text the text side's. As one dot
  product of vectors [g, lambda log p_image] . [q, p_text] it fits the existing index.
With --val-mr also the UCM val mR (tie-aware) of the class-evidence score for each lambda.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssjdn.core.offline import use_offline_hub

use_offline_hub()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_find_objects import OBJECT_QUERIES, average_precision, build_benchmark  # noqa: E402

LAMBDAS = (0.01, 0.03, 0.1)
# Weights of the class-probability part of a fused unit vector (the form an index can store
# with its invariants kept: unit norms, cosines in [-1, 1], image-to-image search meaningful).
FUSED_WEIGHTS = (0.1, 0.3, 1.0, 3.0)
# (weight, temperature): the image side's class distribution softened, softmax(log p / T), so a
# class that covers a quarter of the tile (p ~ 0.1-0.3) is not drowned by the scene's class.
FUSED_SOFTENED = ((1.0, 2.0), (3.0, 2.0), (1.0, 4.0), (3.0, 4.0))


def fused(unit: torch.Tensor, probs: torch.Tensor, weight: float) -> torch.Tensor:
    """normalize([unit, sqrt(weight) * probs]): a cosine of two such vectors is
    (g.t + weight * p_image.p_text) / (norms), the norms within sqrt(1 + weight) of 1."""
    return F.normalize(torch.cat([unit, probs * weight ** 0.5], -1), dim=-1)


def region_slices(side: int, grid: int) -> list[tuple[slice, slice]]:
    """Half-size regions (grid 3: at quarter steps) or quarters (grid 2) of a side x side map."""
    half, step = side // 2, (side // 2 if grid == 2 else side // 4)
    return [(slice(r * step, r * step + half), slice(c * step, c * step + half))
            for r in range(grid) for c in range(grid)]


@torch.no_grad()
def tile_vectors(model, images: torch.Tensor, batch: int = 26) -> dict[str, torch.Tensor]:
    """global [N, D], LSD image log-probs [N, K], region embeddings [N, R, D] (grid 2 and 3)."""
    out = {"global": [], "logp": [], "regions2": [], "regions3": []}
    for start in range(0, len(images), batch):
        feats = model._project(model.backbone_features(model.preprocess_images(images[start:start + batch])))
        base, logits, maps, _ = model._decouple(feats)
        out["global"].append(F.normalize(base, dim=-1))
        out["logp"].append(logits.log_softmax(-1))
        for grid in (2, 3):
            out[f"regions{grid}"].append(torch.stack([region_embedding(model, feats, maps, index, grid)
                                                      for index in range(grid * grid)], 1))
    return {k: torch.cat(v) for k, v in out.items()}


def region_embedding(model, feats, maps, index: int, grid: int) -> torch.Tensor:
    clues = []
    for direction in maps.sem:
        for scale, f in enumerate(feats):
            rows, cols = region_slices(f.shape[-1], grid)[index]
            weight = (maps.sem[direction][scale] * maps.ssm[direction][scale])[:, None, rows, cols]
            clues.append((f[..., rows, cols] * weight).sum((2, 3)) / weight.sum((2, 3)).clamp_min(1e-6))
    base = model.bsd.fuse(torch.cat(clues, 1))
    fused = feats[0] + sum(F.interpolate(f, size=feats[0].shape[-2:], mode="bilinear", align_corners=False)
                           for f in feats[1:])
    rows, cols = region_slices(fused.shape[-1], grid)[index]
    if model.switches["lsd"]:
        tokens = fused[..., rows, cols].flatten(2).transpose(1, 2)
        base, _ = model.lsd.image(model.lsd.category_embeddings, tokens, base)
    return F.normalize(base, dim=-1)


@torch.no_grad()
def text_vectors(model, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit text embeddings [N, D] and the LSD text category distributions [N, K]."""
    batch = model.tokenize(texts)
    base, logits = model.text_forward(batch["input_ids"], batch["attention_mask"])
    return F.normalize(base, dim=-1), logits.softmax(-1)


def candidate_scores(vectors: dict, text: torch.Tensor, p_text: torch.Tensor) -> dict[str, torch.Tensor]:
    g = vectors["global"] @ text
    scores = {"global": g}
    for grid in (2, 3):
        best = (vectors[f"regions{grid}"] @ text).max(1).values
        scores[f"region max ({grid * grid} regions)"] = best
        scores[f"0.5 global + 0.5 region max ({grid * grid})"] = 0.5 * g + 0.5 * best
    for lam in LAMBDAS:
        scores[f"global + {lam} class evidence"] = g + lam * (vectors["logp"] @ p_text)
    for weight in FUSED_WEIGHTS:
        image = fused(vectors["global"], vectors["logp"].exp(), weight)
        scores[f"fused vector, class weight {weight}"] = image @ fused(text, p_text, weight)
    for weight, temperature in FUSED_SOFTENED:
        image = fused(vectors["global"], (vectors["logp"] / temperature).softmax(-1), weight)
        scores[f"fused, weight {weight}, T {temperature}"] = image @ fused(text, p_text, weight)
    return scores


def benchmark_ap(model, data_root: Path) -> dict[str, dict[str, float]]:
    tiles, records, _ = build_benchmark(data_root)
    vectors = tile_vectors(model, tiles)
    result: dict[str, dict[str, float]] = {}
    for kind, query in OBJECT_QUERIES.items():
        text, p_text = text_vectors(model, [query])
        relevant = [r["kind"] == kind for r in records]
        for name, score in candidate_scores(vectors, text[0], p_text[0]).items():
            order = torch.argsort(score, descending=True).tolist()
            result.setdefault(name, {})[kind] = average_precision([relevant[i] for i in order], sum(relevant))
    for per in result.values():
        per["mean"] = float(np.mean([per[k] for k in OBJECT_QUERIES]))
    return result


def val_mr(model, data_root: Path) -> dict[str, float]:
    from ssjdn.training.augment import load_images, resize
    from ssjdn.training.datasets import load_dataset
    from ssjdn.training.metrics import all_metrics

    dataset = load_dataset(data_root, "val", name="ucm")
    images = torch.stack([resize(i, model.input_size) for i in load_images(dataset.image_paths)])
    vectors = tile_vectors(model, images)
    captions = dataset.all_captions
    text, p_text = zip(*(text_vectors(model, captions[s:s + 128]) for s in range(0, len(captions), 128)))
    text, p_text = torch.cat(text), torch.cat(p_text)
    result = {}
    for lam in (0.0,) + LAMBDAS:
        scores = vectors["global"] @ text.T + lam * vectors["logp"] @ p_text.T
        result[f"lambda {lam}"] = all_metrics(scores, 1, captions=captions)["mR"]
    for weight in FUSED_WEIGHTS:
        scores = fused(vectors["global"], vectors["logp"].exp(), weight) @ fused(text, p_text, weight).T
        result[f"fused {weight}"] = all_metrics(scores, 1, captions=captions)["mR"]
    for weight, temperature in FUSED_SOFTENED:
        image = fused(vectors["global"], (vectors["logp"] / temperature).softmax(-1), weight)
        scores = image @ fused(text, p_text, weight).T
        result[f"fused {weight} T {temperature}"] = all_metrics(scores, 1, captions=captions)["mR"]
    return result


def main(argv=None) -> None:
    from ssjdn.core.model.api import default_model_path, load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(default_model_path()))
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[1].parent
                                                   / "shared" / "datasets" / "ucm_captions"))
    parser.add_argument("--val-mr", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, device="cpu")
    result = {"ap": benchmark_ap(model, Path(args.data_root))}
    for name, per in result["ap"].items():
        print(f"{name:36s} mean AP {per['mean']:.3f}  "
              + "  ".join(f"{k} {per[k]:.3f}" for k in OBJECT_QUERIES))
    if args.val_mr:
        result["val_mr"] = val_mr(model, Path(args.data_root))
        print("UCM val mR (tie-aware): " + ", ".join(f"{k} {v:.2f}" for k, v in result["val_mr"].items()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
