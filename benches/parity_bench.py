"""Time the original ``inv_conv_with_bp`` extension and our drop-in at the same shapes, same run.

    INV_CONV_ORIGINAL=inv_conv_with_bp_original python benches/parity_bench.py [--out table.md]

Needs a GPU and the original built under the module name in $INV_CONV_ORIGINAL (default
``inv_conv_with_bp_original``). Both are called the same way (TL, float32, in-place outputs,
zeroed scratch buffers allocated outside the timed region). CUDA events around each call,
median after two warm-up calls; the number of timed calls is chosen so that each measurement
takes about two seconds (at least 3, at most 50), because the original's dw runs for seconds
at the largest shape. Writes a markdown table (and the numbers as JSON beside it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import torch

import inv_conv_with_bp as ours

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import cuda_median_ms  # noqa: E402

SHAPES = [(64, 4, 32, 32), (64, 12, 32, 32), (64, 48, 64, 64)]
K = 3
FUNCTIONS = ("inverse", "forward", "dy", "dw")


def timed_ms(fn, budget_s: float = 2.0) -> tuple[float, int]:
    fn()  # warm-up (our kernels compile at first use)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    reps = max(3, min(50, int(budget_s / max(first, 1e-4))))
    return cuda_median_ms(fn, reps, warmup=0), reps


def calls(module, b, c, h, w):
    y = torch.randn(b, c, h, w, device="cuda")
    g = torch.randn_like(y)
    # Near the identity, like a freshly initialised layer, so nothing overflows at 64×64.
    kernel = torch.randn(c, c, K, K, device="cuda") * 0.01
    out = torch.zeros_like(y)
    out_w = torch.zeros_like(kernel)
    m_dy = torch.zeros_like(y)
    m_dw = torch.zeros(b, c, K, K, h, w, device="cuda")
    return {
        "inverse": lambda: module.inverse(y, kernel, out),
        "forward": lambda: module.forward(y, kernel, out),
        "dy": lambda: module.dy(g, kernel, m_dy, out),
        "dw": lambda: module.dw(y, kernel, g, m_dw, out_w),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="markdown table path (JSON written beside it)")
    args = parser.parse_args()
    name = os.environ.get("INV_CONV_ORIGINAL", "inv_conv_with_bp_original")
    original = importlib.import_module(name)
    rows = []
    for shape in SHAPES:
        b, c, h, w = shape
        theirs, mine = calls(original, *shape), calls(ours, *shape)
        for function in FUNCTIONS:
            t_orig, n_orig = timed_ms(theirs[function])
            t_ours, n_ours = timed_ms(mine[function])
            rows.append({"B": b, "C": c, "H": h, "W": w, "function": function,
                         "original_ms": t_orig, "ours_ms": t_ours, "reps": [n_orig, n_ours]})
            print(f"B={b} C={c} {h}x{w} {function:8s} original {t_orig:10.3f} ms   ours {t_ours:8.3f} ms"
                  f"   x{t_orig / t_ours:8.1f}", flush=True)
        del theirs, mine
        torch.cuda.empty_cache()
    lines = [f"{torch.cuda.get_device_name()}, torch {torch.__version__}, float32, TL, k = 3; "
             "CUDA-event medians (ms per call).", "",
             "| B, C, H×W | function | original | ours | original / ours |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['B']}, {r['C']}, {r['H']}×{r['W']} | {r['function']} | {r['original_ms']:.3f} | "
                     f"{r['ours_ms']:.3f} | {r['original_ms'] / r['ours_ms']:.0f}× |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table)
        with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
