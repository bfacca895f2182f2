"""Probe for nondeterminism in the CUDA sweep: the same inputs, many runs, bitwise comparison.

A correct kernel gives bitwise-identical results on every run of the same inputs (the sweep has
no atomics). For each shape, order and dtype this runs inverse(forward(x)) and the adjoint
sweep repeatedly and reports the number of distinct results and the worst round-trip error.

    python tools/device/race_probe.py [--runs 30]
"""

import argparse

import torch

import inv_conv
from inv_conv import _cuda

SHAPES = [(2, 4, 256, 256, 3, 3), (2, 3, 256, 256, 3, 3), (1, 12, 128, 128, 3, 3), (2, 48, 64, 64, 3, 3), (1, 24, 70, 40, 3, 3)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    print("| shape | order | dtype | distinct inverse results | distinct adjoint results | worst round-trip rel. error |")
    print("|---|---|---|---|---|---|")
    bad = 0
    for shape in SHAPES:
        b, c, h, w, kh, kw = shape
        gen = torch.Generator().manual_seed(0)
        x64 = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
        w64 = torch.randn(c, c, kh, kw, generator=gen, dtype=torch.float64) * (0.3 / (c * kh * kw) ** 0.5)
        for order in inv_conv.ORDERS:
            for dtype in (torch.float32, torch.float64):
                x, wt = x64.to("cuda", dtype), w64.to("cuda", dtype)
                y = _cuda.forward(x, wt, order)
                inverses, adjoints, worst = set(), set(), 0.0
                for _ in range(args.runs):
                    xi = _cuda.inverse(y, wt, order)
                    ui = _cuda.inverse_adjoint(x, wt, order)
                    inverses.add(hash(xi.cpu().numpy().tobytes()))
                    adjoints.add(hash(ui.cpu().numpy().tobytes()))
                    worst = max(worst, ((xi.double() - x64.cuda()).norm() / x64.norm()).item())
                bad += len(inverses) > 1 or len(adjoints) > 1
                print(f"| {'x'.join(map(str, shape))} | {order} | {str(dtype)[6:]} | {len(inverses)} | {len(adjoints)} | {worst:.2e} |")
    print(f"nondeterministic cases: {bad}")
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
