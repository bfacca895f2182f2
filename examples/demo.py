"""Core demo: the original extension's four ops (through the drop-in `inv_conv_with_bp`) and an
InvConv2d round trip on a real-sized input.

Prints the error of each op against an independent oracle and a timing table. Runs on the GPU
when one is usable (``inv_conv.cuda_available()``), else on the CPU.

    python examples/demo.py
"""

import statistics
import time

import torch
import torch.nn.functional as F

import inv_conv
import inv_conv_with_bp
from inv_conv import reference


def timed(fn, device, repeats=10):
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def main():
    device = torch.device("cuda" if inv_conv.cuda_available() else "cpu")
    torch.manual_seed(0)
    b, c, h, w, k = 16, 12, 32, 32, 3
    y = torch.randn(b, c, h, w, device=device)
    kernel = torch.randn(c, c, k, k, device=device) * 0.05
    g = torch.randn_like(y)
    x, fwd, du, dk = (torch.empty_like(y), torch.empty_like(y), torch.empty_like(y), torch.empty_like(kernel))

    print(f"inv_conv {inv_conv.__version__} on {device}; input (B={b}, C={c}, {h}×{w}), kernel {k}×{k}, order TL")
    rows = [
        ("inverse  x = A⁻¹y", lambda: inv_conv_with_bp.inverse(y, kernel, x)),
        ("forward  A x", lambda: inv_conv_with_bp.forward(x, kernel, fwd)),
        ("dy       A⁻ᵀg", lambda: inv_conv_with_bp.dy(g, kernel, None, du)),
        ("dw       ∂L/∂kernel", lambda: inv_conv_with_bp.dw(y, kernel, g, None, dk)),
    ]
    times = {name: timed(fn, device) for name, fn in rows}

    # Oracles: the padded convolution for inverse and forward, the adjoint identity for dy, and
    # PyTorch's own conv weight-gradient (negated, masked) of u = dy against x for dw.
    pads = reference.padding("TL", k, k)
    errors = {
        rows[0][0]: rel(F.conv2d(F.pad(x, pads), reference.effective_weight(kernel, "TL")), y),
        rows[1][0]: rel(fwd, y),
        rows[2][0]: abs(((g * x).sum() - (du * y).sum()) / (g * x).sum()).item(),
    }
    # In float64: cuDNN's own float32 weight-gradient runs in TF32 by default (about 1e-3 error).
    want_dk = -torch.nn.grad.conv2d_weight(F.pad(x.double(), pads), kernel.shape, du.double())
    want_dk[:, :, k - 1, k - 1] = torch.tril(want_dk[:, :, k - 1, k - 1], -1)
    errors[rows[3][0]] = rel(dk, want_dk)

    layer = inv_conv.InvConv2d(c, k, order="BR").to(device)
    z, logdet = layer(y)
    errors["InvConv2d round trip"] = rel(layer.reverse(z), y)
    times["InvConv2d round trip"] = timed(lambda: layer.reverse(layer(y)[0]), device)

    print("| op | median time (ms) | relative error vs oracle |")
    print("|---|---|---|")
    for name in times:
        print(f"| {name} | {times[name]:.3f} | {errors[name]:.2e} |")
    print(f"logdet of InvConv2d: {logdet.abs().max().item()} (exactly 0: the map is unit triangular)")


if __name__ == "__main__":
    main()
