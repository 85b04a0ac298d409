"""The SEM edge band (issue 16, item 3): border rows/columns of the SEM maps against the map mean.

    PYTHONPATH=.pkg .venv/bin/python bench/bench_sem_edges.py [--checkpoint ...] [--count 100]

On the first `--count` UCM-Captions val images: for every SEM map (2 directions x 3 scales),
the mean of its top row, bottom row, left column and right column, each divided by the map's
mean (1.0 = an edge like the rest of the map). A padding artefact shows as one edge far from 1.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssjdn.core.offline import use_offline_hub

use_offline_hub()

import torch  # noqa: E402


def edge_ratios(maps) -> dict[str, dict[str, float]]:
    """SalienceMaps -> {"sem <direction> scale <s>": {edge: mean over images of edge/map mean}}."""
    result = {}
    for direction, per_scale in maps.sem.items():
        for scale, sem in enumerate(per_scale):
            mean = sem.flatten(1).mean(1)
            edges = {"top": sem[:, 0, :], "bottom": sem[:, -1, :], "left": sem[:, :, 0], "right": sem[:, :, -1]}
            result[f"sem {direction} scale {scale}"] = {
                name: float((edge.mean(1) / mean.clamp_min(1e-9)).mean()) for name, edge in edges.items()}
    return result


def main(argv=None) -> None:
    from ssjdn.core.model.api import default_model_path, load_model
    from ssjdn.training.augment import read_image, resize

    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(default_model_path()))
    parser.add_argument("--data-root", default=str(here.parent / "shared" / "datasets" / "ucm_captions"))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.data_root)
    data = json.loads((root / "dataset_ucm.json").read_text())
    stems = [Path(e["filename"]).stem for e in data["images"] if e["split"] == "val"][:args.count]
    images = torch.stack([resize(read_image(next((root / "images").glob(f"{s}.*"))), 256) for s in stems])
    model = load_model(args.checkpoint, device="cpu")
    _, maps = model.encode_images(images, with_maps=True)
    result = edge_ratios(maps)
    for name, row in result.items():
        print(f"{name:28s} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()))
    print(json.dumps({"images": len(stems), "edges": result}))


if __name__ == "__main__":
    main()
