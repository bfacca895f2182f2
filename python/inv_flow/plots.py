"""PNG figures: sample grids, data-vs-reconstruction figures, bits/dim curves."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from inv_flow.writes import write_atomically, write_png_figure


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """Float pixel values (N, C, H, W) in [0, 256) → uint8 (N, H, W, C), clamped and floored."""
    array = images.detach().float().cpu()
    array = torch.nan_to_num(array, nan=0.0, posinf=255.0, neginf=0.0)
    array = array.clamp(0, 255).floor().to(torch.uint8)
    return array.permute(0, 2, 3, 1).numpy()


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 1,
               min_cell: int = 32) -> np.ndarray:
    """Tile images (N, C, H, W) into one uint8 array (rows, cols, 3 or 1).

    Small images (e.g. 8×8 digits) are enlarged by an integer factor (nearest neighbour) so
    each cell is at least ``min_cell`` pixels wide.
    """
    tiles = to_uint8_images(images)
    count, height, width, channels = tiles.shape
    if count == 0:
        raise ValueError("no images to draw")
    scale = max(1, math.ceil(min_cell / max(height, width)))
    if scale > 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
        height, width = height * scale, width * scale
    nrow = nrow or math.ceil(math.sqrt(count))
    ncol_rows = math.ceil(count / nrow)
    grid = np.full((ncol_rows * (height + padding) + padding, nrow * (width + padding) + padding,
                    channels), 255, dtype=np.uint8)
    for index in range(count):
        row, col = divmod(index, nrow)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[top:top + height, left:left + width] = tiles[index]
    return grid


def _save_png_atomically(array: np.ndarray, path: str | os.PathLike) -> Path:
    from PIL import Image  # noqa: PLC0415

    mode_array = array[:, :, 0] if array.shape[2] == 1 else array
    image = io.BytesIO()
    Image.fromarray(mode_array).save(image, format="PNG")
    write_atomically(image.getbuffer(), path)
    return Path(path)


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Write images (N, C, H, W, pixel values in [0, 256)) as one PNG grid."""
    return _save_png_atomically(image_grid(images, nrow=nrow), path)


def save_reconstruction_figure(originals: torch.Tensor, reconstructions: torch.Tensor,
                               path: str | os.PathLike) -> Path:
    """PNG with three rows: data, model reconstruction (reverse(forward(x))), and |difference|
    amplified ×10 (an exact inverse shows a blank bottom row)."""
    count = originals.shape[0]
    difference = ((originals.float() - reconstructions.float()).abs() * 10).clamp(0, 255)
    stacked = torch.cat([originals.float().cpu(), reconstructions.float().cpu(), difference.cpu()])
    return _save_png_atomically(image_grid(stacked, nrow=count), path)


def plot_curves(series: Mapping[str, Sequence[tuple[float, Any]]], out: str | os.PathLike,
                ylabel: str, title: str) -> Path:
    """One line per named series of (epoch, value) points, non-finite values left out, to PNG."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, points in series.items():
        points = [(e, v) for e, v in points if isinstance(v, (int, float)) and math.isfinite(v)]
        if points:
            epochs, values = zip(*points)
            axis.plot(epochs, values, marker="o", markersize=3, label=name)
    axis.set_xlabel("epoch")
    axis.set_ylabel(ylabel)
    axis.grid(True, alpha=0.3)
    if axis.get_lines():
        axis.legend()
    axis.set_title(title)
    figure.tight_layout()
    out = Path(out)
    try:
        write_png_figure(figure, out)
    finally:
        plt.close(figure)
    return out


def plot_bits_per_dim(metrics_path: str | os.PathLike, out: str | os.PathLike,
                      keys: Sequence[str] | None = None) -> Path:
    """Draw every ``*_bpd`` series of the per-epoch records of a metrics JSONL against epoch."""
    from inv_flow.logging_utils import read_metrics  # noqa: PLC0415

    records = [r for r in read_metrics(metrics_path) if r.get("event") == "epoch"]
    if not records:
        raise ValueError(f"{metrics_path} holds no per-epoch records (event 'epoch') to plot")
    series_keys = keys or sorted({k for r in records for k in r if k.endswith("_bpd")})
    series = {key: [(r["epoch"], r.get(key)) for r in records] for key in series_keys}
    return plot_curves(series, out, "bits / dim", Path(metrics_path).parent.name or "bits/dim")
