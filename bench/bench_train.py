"""Training throughput: full SSJDN training steps vs backbone-only forward+backward.

    .venv/bin/python bench/bench_train.py [--config ssjdn-lite0-minilm] [--batch 32]
                                          [--steps 3] [--device cpu|cuda] [--threads 2]

For the same batch of 256 px images it times, in one process and one after another:
1. backbone only: the image backbone's forward + backward (the floor for any training step);
2. end-to-end step: preprocess + full model (backbone, BSD, LSD, text encoder) + STL/LSD loss
   + backward + Adam step, with one caption per image;
3. cached steps of the CPU route, one per `--cached FROZEN_STAGES:FROZEN_TEXT_LAYERS` recipe
   (default 8:4, the shipped model: backbone frozen, its maps read from a feature cache,
   MiniLM's top 2 layers trained; 6:2 runs Lite0's top two stages and MiniLM's top 4 layers
   from the cached frozen prefix). `--cached-only` skips 1 and 2.
Prints one line per measurement and a JSON summary; target (GPU): step >= 0.7x backbone-only.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from ssjdn.core.offline import use_offline_hub

use_offline_hub()   # before torch/transformers load

import torch  # noqa: E402

CAPTION = "many planes are parked next to the long terminal of the airport"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, steps, device) -> float:
    fn()  # warm-up: allocations, cuDNN autotune, lazy init
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - started) / steps


def _autocast(device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def bench(config: str, batch: int, steps: int, device: torch.device,
          cached_recipes: tuple[str, ...] = ("8:4",), cached_only: bool = False) -> dict:
    from ssjdn.core.model.api import create_model

    torch.manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8)
    labels = torch.randint(0, 21, (batch,), device=device)
    results = {"config": config, "batch": batch, "device": str(device),
               "threads": torch.get_num_threads()}

    if not cached_only:
        results.update(_end_to_end(config, images, labels, steps, device))
    for recipe in cached_recipes:
        frozen, text_frozen = (int(v) for v in recipe.split(":"))
        results[f"cached_step_img_s_{frozen}_{text_frozen}"] = _cached(
            config, images, labels, steps, device, frozen, text_frozen)
    return results


def _end_to_end(config, images, labels, steps, device) -> dict:
    from ssjdn.core.model.api import create_model

    batch, results = len(images), {}
    model = create_model(config, device=device).train()
    tokens = model.tokenize([f"{CAPTION} {i}" for i in range(batch)])
    pixels = model.preprocess_images(images)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        pixels = pixels.contiguous(memory_format=torch.channels_last)

    def backbone_only():
        with _autocast(device):
            feats = model.backbone_features(pixels)
        sum(f.float().mean() for f in feats).backward()

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def full_step():
        with _autocast(device):
            out = model(model.preprocess_images(images), tokens["input_ids"],
                        tokens["attention_mask"])
        loss, _ = model.criterion(out, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    results["backbone_fwd_bwd_img_s"] = batch / _time(backbone_only, steps, device)
    results["train_step_img_s"] = batch / _time(full_step, steps, device)
    results["step_vs_backbone"] = results["train_step_img_s"] / results["backbone_fwd_bwd_img_s"]
    return results


def _cached(config, images, labels, steps, device, frozen: int, text_frozen: int) -> float:
    """img/s of a CPU-route step: the frozen prefix is read from a cache, the rest trains."""
    from ssjdn.core.model.api import create_model

    batch = len(images)
    cpu_model = create_model(config, overrides={"image": {"freeze_stages": frozen, "width": 128},
                                                "text": {"freeze_layers": text_frozen},
                                                "lsd_attn_dim": 128}, device=device).train()
    tokens = cpu_model.tokenize([f"{CAPTION} {i}" for i in range(batch)])
    with torch.no_grad(), _autocast(device):
        cached = [f.half() for f in cpu_model.backbone.frozen_prefix(cpu_model.preprocess_images(images))]
    cached_opt = torch.optim.Adam([p for p in cpu_model.parameters() if p.requires_grad], lr=1e-4)

    def cached_step():
        with _autocast(device):
            out = cpu_model(None, tokens["input_ids"], tokens["attention_mask"],
                            features=[f.float() for f in cached])
        loss, _ = cpu_model.criterion(out, labels)
        cached_opt.zero_grad(set_to_none=True)
        loss.backward()
        cached_opt.step()

    return batch / _time(cached_step, steps, device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ssjdn-lite0-minilm")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--cached", nargs="*", default=["8:4"],
                        help="FROZEN_STAGES:FROZEN_TEXT_LAYERS recipes of cached steps to time")
    parser.add_argument("--cached-only", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = bench(args.config, args.batch, args.steps, torch.device(args.device),
                    tuple(args.cached), args.cached_only)
    if not args.cached_only:
        print(f"backbone-only fwd+bwd   {results['backbone_fwd_bwd_img_s']:8.1f} img/s")
        print(f"end-to-end train step   {results['train_step_img_s']:8.1f} img/s "
              f"({results['step_vs_backbone']:.2f}x backbone-only)")
    for recipe in args.cached:
        frozen, text_frozen = recipe.split(":")
        print(f"cached step, {frozen} stages / {text_frozen} text layers frozen "
              f"{results[f'cached_step_img_s_{frozen}_{text_frozen}']:8.1f} img/s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
