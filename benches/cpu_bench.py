"""CPU benchmark: inv_conv's ops through the Python API next to PyTorch's own CPU ops.

For each shape: median wall time (after warm-up) of our forward, inverse, dy (A⁻ᵀ g), dw
(the inverse's weight-gradient) and the forward op's input/weight-gradients, beside
``F.conv2d`` on the pre-padded input and ``torch.nn.grad.conv2d_weight`` measured in the same run
with the same thread count. Prints a markdown table.

    python benches/cpu_bench.py [--repeats 20] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
import torch.nn.functional as F

import inv_conv
from inv_conv import reference
from timing import median_ms

SHAPES = {"C1 (B=16, C=12, 32×32, k=3)": (16, 12, 32, 32, 3), "C2 (B=4, C=48, 64×64, k=3)": (4, 48, 64, 64, 3)}


def bench_shape(b, c, h, w, k, repeats):
    torch.manual_seed(0)
    x = torch.randn(b, c, h, w)
    weight = torch.randn(c, c, k, k) * 0.05
    g = torch.randn(b, c, h, w)
    y = inv_conv.conv2d(x, weight)
    x_inv = inv_conv.inv_conv2d(y, weight)
    u = inv_conv.inv_conv2d_transpose(g, weight)
    xp = F.pad(x, reference.padding("TL", k, k))
    w_eff = reference.effective_weight(weight, "TL")
    rows = {
        "forward": (lambda: inv_conv.conv2d(x, weight), "torch conv2d", lambda: F.conv2d(xp, w_eff)),
        "inverse": (lambda: inv_conv.inv_conv2d(y, weight), "torch conv2d", None),
        "dy (A⁻ᵀg)": (lambda: inv_conv.inv_conv2d_transpose(g, weight), "torch conv2d", None),
        "dw": (lambda: inv_conv.conv2d_weight_grad(x_inv, u, k), "torch conv2d_weight",
               lambda: torch.nn.grad.conv2d_weight(xp, w_eff.shape, g)),
        "forward dx (Aᵀg)": (lambda: inv_conv.conv2d_transpose(g, weight), "torch conv_transpose2d",
                             lambda: F.conv_transpose2d(g, w_eff)),
    }
    base_cache = {}
    out = []
    for name, (ours, base_name, base) in rows.items():
        t_ours = median_ms(ours, repeats)
        if base is None:
            base = rows["forward"][2]
        if base_name not in base_cache:
            base_cache[base_name] = median_ms(base, repeats)
        t_base = base_cache[base_name]
        out.append((name, t_ours, base_name, t_base, t_ours / t_base))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"torch {torch.__version__} threads={torch.get_num_threads()}; "
          f"rayon threads={os.environ.get('RAYON_NUM_THREADS', 'default (all cores)')}")
    print("| shape | op | ours (ms) | baseline | baseline (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    for label, shape in SHAPES.items():
        for name, t, base_name, tb, ratio in bench_shape(*shape, args.repeats):
            print(f"| {label} | {name} | {t:.3f} | {base_name} | {tb:.3f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
