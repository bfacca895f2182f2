"""Per-call host overhead of the inv_conv ops next to F.conv2d, on a problem so small that the
arithmetic is negligible (default 1×4×8×8, k = 3).

    python benches/host_bench.py [--device cpu|cuda] [--threads 1] [--reps 2000]

Prints µs per call (median of batches of back-to-back calls, wall clock, synchronized on CUDA)
for a forward call and for a training step (forward + backward of both arguments), through the
eager fast path and through the torch.library custom ops (what torch.compile uses), and the
ratios to the same for a plain convolution layer (F.conv2d).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import inv_conv
from inv_conv import ops


def per_call_us(fn, reps: int, device: str, batches: int = 7) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(max(reps // 10, 10)):
        fn()
    sync()
    times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / reps * 1e6)
    return statistics.median(times)


def measure(device: str, shape, reps: int) -> dict:
    b, c, h, w, k = shape
    torch.manual_seed(0)
    x = torch.randn(b, c, h, w, device=device, requires_grad=True)
    wt = (torch.randn(c, c, k, k, device=device) * 0.1).requires_grad_()
    g = torch.randn(b, c, h, w, device=device)
    xpad = F.pad(x.detach(), (k - 1, 0, k - 1, 0)).requires_grad_()
    r = {}
    with torch.no_grad():
        r["F.conv2d call"] = per_call_us(lambda: F.conv2d(xpad, wt), reps, device)
    r["F.conv2d step"] = per_call_us(lambda: F.conv2d(xpad, wt).backward(g), reps, device)
    for path, eager in (("fast path", True), ("custom op", False)):
        ops._EAGER = eager
        with torch.no_grad():
            r[f"conv2d call ({path})"] = per_call_us(lambda: inv_conv.conv2d(x, wt), reps, device)
            r[f"inv_conv2d call ({path})"] = per_call_us(lambda: inv_conv.inv_conv2d(x, wt), reps, device)
        r[f"inv_conv2d step ({path})"] = per_call_us(lambda: inv_conv.inv_conv2d(x, wt).backward(g), reps, device)
    ops._EAGER = True
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--shape", default="1,4,8,8,3", help="B,C,H,W,K")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
        import os

        os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    shape = tuple(int(v) for v in args.shape.split(","))
    r = measure(args.device, shape, args.reps)
    print(f"host overhead, {args.device}, shape B,C,H,W,K = {shape}, torch {torch.__version__}, "
          f"{args.threads if args.device == 'cpu' else ''} thread(s); µs per call (median)")
    print("| what | µs | × F.conv2d |")
    print("|---|---|---|")
    for key, us in r.items():
        base = r["F.conv2d step"] if "step" in key else r["F.conv2d call"]
        print(f"| {key} | {us:.1f} | {us / base:.2f} |")


if __name__ == "__main__":
    main()
