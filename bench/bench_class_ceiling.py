"""How much of a checkpoint's retrieval score is scene class, and what class errors cost.

    .venv/bin/python bench/bench_class_ceiling.py --data-root ../shared/datasets/ucm_captions
        [--checkpoint resources/ssjdn-default.safetensors] [--split val] [--threads 2]

Prints, for one split, tie-aware mR of:
- the checkpoint as it scores (its own class-evidence weight);
- a class-only oracle (score 1 when image and caption share the category, else 0: the model
  adds nothing inside a class);
- the checkpoint plus a class oracle (its scores, with every pair of the same category raised
  above every other pair): what the model's within-class ranking is worth once the class is
  never wrong;
and the LSD classifier's accuracy on images and captions with its most frequent confusions.

Why: every UCM recipe measured in issue 17 settles at val mR 49-50.5. If the oracle row sits
far above the checkpoint, the gap is image classification; if not, it is ranking inside a class.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

from ssjdn.core.offline import use_offline_hub

use_offline_hub()   # before torch/transformers load

import torch  # noqa: E402

ORACLE_BOOST = 10.0   # larger than any cosine gap, so the class decides first


@torch.no_grad()
def class_logits(model, views: torch.Tensor, captions: list[str], batch_size: int = 64):
    """LSD's class logits for the images (uint8 test views) and the captions."""
    image_logits, text_logits = [], []
    with model._eval_mode():
        for start in range(0, len(views), batch_size):
            pixels = model.preprocess_images(views[start:start + batch_size])
            image_logits.append(model.image_from_features(model.backbone_features(pixels))[1].float())
        for start in range(0, len(captions), 256):
            batch = model.tokenize(captions[start:start + 256])
            text_logits.append(model.text_forward(batch["input_ids"], batch["attention_mask"])[1].float())
    return torch.cat(image_logits).cpu(), torch.cat(text_logits).cpu()


def class_ceiling(model, dataset, views: torch.Tensor) -> dict:
    from ssjdn.training.evaluate import score_matrix
    from ssjdn.training.metrics import all_metrics

    captions = dataset.all_captions
    labels = torch.tensor(dataset.labels)
    caption_labels = labels.repeat_interleave(len(captions) // len(labels))
    same_class = (labels[:, None] == caption_labels[None, :]).float()
    scores = score_matrix(model, dataset, images=list(views))

    def mean_recall(matrix: torch.Tensor) -> float:
        return round(all_metrics(matrix, 1, captions=captions)["mR"], 2)

    result = {"mR": mean_recall(scores), "class_oracle_only_mR": mean_recall(same_class),
              "model_plus_class_oracle_mR": mean_recall(scores + ORACLE_BOOST * same_class)}
    if not model.switches["lsd"]:
        return result
    image_logits, text_logits = class_logits(model, views, captions)
    image_pred, text_pred = image_logits.argmax(1), text_logits.argmax(1)
    names = dataset.categories
    result.update(
        image_class_accuracy=round((image_pred == labels).float().mean().item(), 4),
        caption_class_accuracy=round((text_pred == caption_labels).float().mean().item(), 4),
        image_confusions=[f"{names[t]} -> {names[p]}: {n}" for (t, p), n in Counter(
            (int(t), int(p)) for t, p in zip(labels, image_pred) if t != p).most_common(8)])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ssjdn.core.model.api import default_model_path, load_model
    from ssjdn.training.augment import load_images, test_view
    from ssjdn.training.datasets import load_dataset

    model = load_model(args.checkpoint or default_model_path(), device="cpu")
    dataset = load_dataset(args.data_root, args.split)
    views = torch.stack([test_view(image, {"test_size": model.input_size})
                         for image in load_images(dataset.image_paths)])
    result = class_ceiling(model, dataset, views)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
