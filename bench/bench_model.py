"""Model throughput: full SSJDN forward+backward vs backbone-only forward+backward.

Same batch, same device; bf16 autocast on CUDA, fp32 on CPU. Prints images/s for both and their
ratio (the training target is >= 0.7 on GPU). Usage:

    python bench/bench_model.py [--config ssjdn-lite0-minilm] [--batch 32] [--steps 5]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ssjdn.core.api import create_model  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(step, batch, steps, device) -> float:
    step()  # warm-up (cudnn autotune, lazy init)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ssjdn-lite0-minilm")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)

    model = create_model(args.config).train()
    device = model.device
    size = model.input_size
    images = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, device=device)
    captions = ["two rows of white planes parked beside a grey terminal building"] * args.batch
    tokens = model.tokenize(captions)
    labels = torch.arange(args.batch, device=device) % max(len(model.categories), 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def full_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(model.preprocess_images(images), tokens["input_ids"], tokens["attention_mask"])
            loss, _ = model.criterion(out, labels)
        loss.backward()
        optimizer.step()

    def backbone_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            feats = model.backbone_features(model.preprocess_images(images))
            loss = sum(f.float().mean() for f in feats)
        loss.backward()
        optimizer.step()

    full = _rate(full_step, args.batch, args.steps, device)
    backbone = _rate(backbone_step, args.batch, args.steps, device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; config {args.config}; batch {args.batch}; "
          f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}")
    print(f"full SSJDN forward+backward : {full:9.1f} images/s")
    print(f"backbone-only fwd+bwd      : {backbone:9.1f} images/s")
    print(f"ratio full/backbone        : {full / backbone:9.2f}")


if __name__ == "__main__":
    main()
