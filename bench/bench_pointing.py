"""SEM pointing score: does the salience map point at a pasted object?

    .venv/bin/python bench/bench_pointing.py [--checkpoint resources/ssjdn-default.safetensors]
        [--images ../shared/datasets/ucm_captions/images] [--object-size 88] [--threads 2]

Objects (four airplanes, boxes picked by eye on UCM-Captions *val* images, which the model
never trained on) are cropped, scaled to `--object-size` px on their long
side and pasted at five positions onto plain 256 px backgrounds of three colours. For each
picture and each SEM map (2 directions x 3 scales, upsampled to the picture) the score is the
share of the map's mass inside the pasted object's box; a uniform map scores the box's share of
the picture. Prints the mean share per map, the uniform share and their ratio (goal: >= 3x), as
text and one JSON line.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssjdn.core.offline import use_offline_hub

use_offline_hub()   # before torch/transformers load

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

CANVAS = 256
# (UCM file stem, box x0, y0, x1, y1 in the 256 px image): one object each, picked by eye.
OBJECTS = [
    ("181", 40, 60, 232, 222),    # airliner, apron
    ("184", 40, 75, 226, 222),    # airliner with shadow
    ("187", 85, 75, 224, 214),    # airliner on sand
    ("190", 124, 90, 174, 136),   # small jet
]
BACKGROUNDS = [(128, 128, 128), (170, 160, 140), (90, 105, 80)]   # grey, sand, grass
POSITIONS = [(0.5, 0.5), (0.2, 0.2), (0.8, 0.2), (0.2, 0.8), (0.8, 0.8)]  # object centre / canvas


def paste(obj: torch.Tensor, colour: tuple[int, int, int], centre: tuple[float, float],
          canvas: int = CANVAS) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """uint8 [3, h, w] object onto a plain canvas; returns the picture and the box (x0, y0, x1, y1)."""
    _, h, w = obj.shape
    image = torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1).expand(3, canvas, canvas).clone()
    x0 = min(max(int(round(centre[0] * canvas - w / 2)), 0), canvas - w)
    y0 = min(max(int(round(centre[1] * canvas - h / 2)), 0), canvas - h)
    image[:, y0:y0 + h, x0:x0 + w] = obj
    return image, (x0, y0, x0 + w, y0 + h)


def mass_share(salience: torch.Tensor, box: tuple[int, int, int, int], size: int = CANVAS) -> float:
    """Share of a map's mass ([h, w], >= 0) inside a box given in picture pixels."""
    up = F.interpolate(salience[None, None].float(), size=(size, size), mode="bilinear",
                       align_corners=False)[0, 0].clamp_min(0)
    x0, y0, x1, y1 = box
    return float(up[y0:y1, x0:x1].sum() / up.sum().clamp_min(1e-12))


def uniform_share(box: tuple[int, int, int, int], size: int = CANVAS) -> float:
    x0, y0, x1, y1 = box
    return (x1 - x0) * (y1 - y0) / float(size * size)


def scale_object(obj: torch.Tensor, long_side: int) -> torch.Tensor:
    _, h, w = obj.shape
    factor = long_side / max(h, w)
    size = (max(int(round(h * factor)), 1), max(int(round(w * factor)), 1))
    scaled = F.interpolate(obj[None].float(), size=size, mode="bilinear", antialias=True,
                           align_corners=False)[0]
    return scaled.round().clamp(0, 255).to(torch.uint8)


def pointing_scores(model, objects: list[torch.Tensor], backgrounds=BACKGROUNDS,
                    positions=POSITIONS) -> dict:
    """Mean SEM mass share inside the boxes per map, the uniform share, and their ratio."""
    pictures, boxes = [], []
    for obj in objects:
        for colour in backgrounds:
            for centre in positions:
                picture, box = paste(obj, colour, centre)
                pictures.append(picture)
                boxes.append(box)
    _, maps = model.encode_images(torch.stack(pictures), with_maps=True)
    uniform = sum(uniform_share(b) for b in boxes) / len(boxes)
    result = {"pictures": len(pictures), "uniform_share": uniform, "maps": {}}
    for direction, per_scale in maps.sem.items():
        for scale, sem in enumerate(per_scale):
            share = sum(mass_share(sem[i].cpu(), b) for i, b in enumerate(boxes)) / len(boxes)
            result["maps"][f"sem_{direction}_s{scale}"] = {"share": share, "ratio": share / uniform}
    return result


def load_objects(images_dir: Path, long_side: int) -> list[torch.Tensor]:
    from ssjdn.training.augment import load_images

    objects = []
    for stem, x0, y0, x1, y1 in OBJECTS:
        path = next(images_dir.glob(f"{stem}.*"), None)
        if path is None:
            raise SystemExit(f"{images_dir} has no image {stem}.*: give --images the UCM images folder.")
        image = load_images([path])[0]
        image = F.interpolate(image[None].float(), size=(CANVAS, CANVAS), mode="bilinear",
                              antialias=True, align_corners=False)[0].round().to(torch.uint8)
        objects.append(scale_object(image[:, y0:y1, x0:x1], long_side))
    return objects


def main(argv=None) -> None:
    from ssjdn.core.model.api import default_model_path, load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(default_model_path()))
    parser.add_argument("--images", default=str(Path(__file__).resolve().parents[1].parent
                                                / "shared" / "datasets" / "ucm_captions" / "images"))
    parser.add_argument("--object-size", type=int, default=88)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, device="cpu")
    result = pointing_scores(model, load_objects(Path(args.images), args.object_size))
    result.update(checkpoint=args.checkpoint, object_size=args.object_size)
    print(f"{result['pictures']} pictures; uniform share {result['uniform_share']:.3f}")
    for name, row in result["maps"].items():
        print(f"{name:28s} share {row['share']:.3f}  ratio {row['ratio']:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
