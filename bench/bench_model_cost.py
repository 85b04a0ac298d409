"""What a candidate default costs when indexing: multiply-accumulates per tile and CPU tiles/s.

Issue 17 asks that a new default keep the CPU encoding rate >= 0.6x the shipped model's (same
machine, same run) and say its FLOPs per tile. This builds each candidate from a model config
with the given head width (untrained: the cost does not depend on the weights), counts its
multiply-accumulates for one tile of its input size (256 px for the Lite models) with torch's FlopCounterMode (backbone and heads apart),
and times `encode_images` on one batch, the candidates interleaved so that a load change on a
shared machine hits each alike; the best of `--repeat` rounds is kept.

    python bench/bench_model_cost.py                      # Lite0/Lite1 at head widths 128 and 256
    python bench/bench_model_cost.py --candidates ssjdn-lite1-minilm:256 --threads 2
    python bench/bench_model_cost.py --layouts      # each also with contiguous weights

Models are placed as the product places them (core.model.api.place_model: channels_last weights
on the CPU since 2026-12-05); `--layouts` adds each candidate with its weights in the default
contiguous layout, to show what that placement is worth.

The first candidate is the reference (default: the shipped default's architecture, Lite0 with
heads of width 128).
"""
from __future__ import annotations

import argparse
import copy
import time

from ssjdn.core.offline import use_offline_hub

use_offline_hub()   # before torch/transformers load

import torch  # noqa: E402

DEFAULT_CANDIDATES = ["ssjdn-lite0-minilm:128", "ssjdn-lite1-minilm:128",
                      "ssjdn-lite0-minilm:256", "ssjdn-lite1-minilm:256"]


def build(candidate: str):
    """A model from "CONFIG:WIDTH" (heads and LSD attention of that width), in eval mode."""
    from ssjdn.core.model.api import create_model
    config, _, width = candidate.partition(":")
    overrides = {"image": {"width": int(width)}, "lsd_attn_dim": int(width)} if width else None
    return create_model(config, overrides=overrides, device="cpu").eval()


@torch.no_grad()
def macs_per_tile(model) -> tuple[float, float]:
    """(whole model, backbone alone) multiply-accumulates in G for one tile of its input size."""
    from torch.utils.flop_counter import FlopCounterMode
    tile = torch.zeros(1, 3, model.input_size, model.input_size, dtype=torch.uint8)
    counts = []
    for run in (lambda: model.encode_images(tile), lambda: model.backbone(tile.float())):
        counter = FlopCounterMode(display=False)
        with counter:
            run()
        counts.append(counter.get_total_flops() / 2 / 1e9)   # a FLOP count is 2 per MAC
    return counts[0], counts[1]


@torch.no_grad()
def tiles_per_second(models: dict, batch: int, repeat: int) -> dict[str, float]:
    """Best-of-`repeat` encode rate of each model on one batch of random tiles, interleaved."""
    def tiles(model):
        size = model.input_size
        return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8,
                             generator=torch.Generator().manual_seed(0))

    batches = {name: tiles(model) for name, model in models.items()}
    for name, model in models.items():
        model.encode_images(batches[name][:2])   # warm-up
    rates: dict[str, float] = {name: 0.0 for name in models}
    for _ in range(repeat):
        for name, model in models.items():
            started = time.perf_counter()
            model.encode_images(batches[name], batch_size=batch)
            rates[name] = max(rates[name], batch / (time.perf_counter() - started))
    return rates


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+", default=DEFAULT_CANDIDATES,
                        help="CONFIG:HEAD_WIDTH, the first is the reference")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layouts", action="store_true",
                        help="also time each candidate with contiguous (not channels_last) weights")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = {name: build(name) for name in args.candidates}
    if args.layouts:
        models.update({f"{name} contiguous": copy.deepcopy(models[name]).to(memory_format=torch.contiguous_format)
                       for name in args.candidates})
    rates = tiles_per_second(models, args.batch, args.repeat)
    reference = args.candidates[0]
    result = {}
    for name, model in models.items():
        total, backbone = macs_per_tile(model)
        result[name] = {"gmac_per_tile": total, "backbone_gmac": backbone, "tiles_per_s": rates[name],
                        "rate_vs_reference": rates[name] / rates[reference]}
        print(f"{name:37s} {total:.3g} GMAC/tile (backbone {backbone:.3g}, heads {total - backbone:.3g})"
              f"  {rates[name]:7.1f} tiles/s  {rates[name] / rates[reference]:.2f}x {reference}")
    return result


if __name__ == "__main__":
    main()
