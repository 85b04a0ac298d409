"""Probe: does SEM supervision make a trained model's SEM maps point at objects?

    .venv/bin/python bench/probe_sem_supervision.py [--checkpoint PATH] [--sparsity 0.1]
        [--epochs 40] [--images ../shared/datasets/ucm_captions]

Fine-tunes ONLY the SEM units of the checkpoint (plus a fresh clue classifier) with the SEM
supervision of docs/model.md (class cross-entropy on each SEM-pooled clue + `sparsity` x mean
SEM value) on 210 UCM-Captions *train* images (10 per class, seeded pick, one random training
view each; the rest of the model fixed, its maps computed once), then prints the pointing
score of bench_pointing.py before and after. It says whether the supervision moves the maps
towards the objects; it is not a retrieval model (the clues feed the embedding, which this
probe does not re-fit), so it makes no retrieval claim.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pointing  # noqa: E402

AUGMENT = {"resize": 278, "rotation": 90, "crop": 256, "test_size": 256}


def _pick(root: Path, per_class: int) -> tuple[list[Path], torch.Tensor]:
    data = json.loads((root / "dataset_ucm.json").read_text())
    by_class: dict[int, list[str]] = {}
    for item in data["images"]:
        if item["split"] == "train":
            stem = item["filename"].split(".")[0]
            by_class.setdefault((int(stem) - 1) // 100, []).append(stem)
    rng = random.Random(0)
    stems = [s for c in sorted(by_class) for s in rng.sample(by_class[c], per_class)]
    paths = [next((root / "images").glob(f"{s}.*")) for s in stems]
    return paths, torch.tensor([(int(s) - 1) // 100 for s in stems])


def _ratios(result: dict) -> dict:
    return {k: [round(v["share"], 3), round(v["ratio"], 2)] for k, v in result["maps"].items()}


def main(argv=None) -> None:
    from ssjdn.core.model.api import default_model_path, load_model
    from ssjdn.training.augment import load_images, train_view

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(default_model_path()))
    parser.add_argument("--images", default=str(Path(__file__).resolve().parents[1].parent
                                                / "shared" / "datasets" / "ucm_captions"))
    parser.add_argument("--sparsity", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    root = Path(args.images)
    model = load_model(args.checkpoint, device="cpu")
    classifier = torch.nn.Linear(int(model.config["image"]["width"]), len(model.categories))
    paths, labels = _pick(root, 10)
    generator = torch.Generator().manual_seed(0)
    views = torch.stack([train_view(im, AUGMENT, generator) for im in load_images(paths)])
    with torch.no_grad():
        feats = model.backbone_features(model.preprocess_images(views))
        feats = [lateral(f) for lateral, f in zip(model.lateral, feats)]
    objects = bench_pointing.load_objects(root / "images", 88)
    before = bench_pointing.pointing_scores(model, objects)
    params = list(model.bsd.sem_units.parameters()) + list(classifier.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    model.train()
    for epoch in range(1, args.epochs + 1):
        for batch in torch.randperm(len(paths), generator=generator).split(35):
            _, maps, clues = model.bsd([f[batch] for f in feats])
            logits = classifier(clues)                                   # [b, 6, K]
            ce = F.cross_entropy(logits.flatten(0, 1), labels[batch, None].expand(-1, 6).flatten())
            mass = torch.stack([a.mean() for per in maps.sem.values() for a in per]).mean()
            optimizer.zero_grad()
            (ce + args.sparsity * mass).backward()
            optimizer.step()
        if epoch % 10 == 0:
            print(f"epoch {epoch}: clue CE {float(ce):.3f}, mean SEM {float(mass):.4f}", flush=True)
    model.eval()
    after = bench_pointing.pointing_scores(model, objects)
    print(json.dumps({"uniform_share": before["uniform_share"], "before": _ratios(before),
                      "after": _ratios(after), "sparsity": args.sparsity, "epochs": args.epochs}))


if __name__ == "__main__":
    main()
