"""Colormaps for heatmaps and salience overlays, as 256-entry RGB lookup tables (no Qt).

Anchors are sampled from the matplotlib maps of the same name (BSD-compatible data); linear
interpolation between them is visually indistinguishable at overlay opacity.
"""
from __future__ import annotations

import numpy as np

_ANCHORS = {
    "viridis": ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779",
                "#6ece58", "#b5de2b", "#fde725"],
    "magma": ["#000004", "#180f3d", "#440f76", "#721f81", "#9e2f7f", "#cd4071", "#f1605d",
              "#fd9668", "#feca8d", "#fcfdbf"],
    "inferno": ["#000004", "#1b0c41", "#4a0c6b", "#781c6d", "#a52c60", "#cf4446", "#ed6925",
                "#fb9b06", "#f7d13d", "#fcffa4"],
    "turbo": ["#30123b", "#4662d7", "#36aaf9", "#1ae4b6", "#72fe5e", "#c7ef34", "#faba39",
              "#f66b19", "#ca2a04", "#7a0403"],
    "hot": ["#0b0000", "#800000", "#ff0000", "#ff8000", "#ffff00", "#ffffff"],
    "gray": ["#000000", "#ffffff"],
}
NAMES = list(_ANCHORS)


def lookup_table(name: str) -> np.ndarray:
    """uint8 [256, 3] table for a colormap name."""
    anchors = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in _ANCHORS[name]], dtype=np.float64)
    positions = np.linspace(0.0, 1.0, len(anchors))
    steps = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(steps, positions, anchors[:, c]) for c in range(3)], axis=1)
    return np.round(table).astype(np.uint8)


def colorize(values: np.ndarray, name: str, vmin: float | None = None, vmax: float | None = None,
             alpha: float = 1.0) -> tuple[np.ndarray, float, float]:
    """float [h, w] -> (uint8 RGBA [h, w, 4], vmin, vmax); NaN becomes transparent.

    The range defaults to the finite min/max so a heatmap with scores 0.21..0.34 still uses the
    whole colormap; the legend shows the real numbers.
    """
    finite = np.isfinite(values)
    if vmin is None or vmax is None:
        lo, hi = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 1.0)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    span = vmax - vmin if vmax > vmin else 1.0
    scaled = np.clip((np.nan_to_num(values, nan=vmin) - vmin) / span, 0.0, 1.0)
    rgba = np.empty(values.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = lookup_table(name)[(scaled * 255).astype(np.uint8)]
    rgba[..., 3] = np.where(finite, int(round(alpha * 255)), 0)
    return rgba, vmin, vmax
