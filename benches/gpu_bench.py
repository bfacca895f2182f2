"""GPU benchmark of the inv_conv CUDA ops next to cuDNN / cuBLAS baselines.

    python benches/gpu_bench.py [--json out.json] [--reps 50] [--kernels] [--solve-only]

CUDA events around each call, median after warm-up. Scenarios S1..S4 (see BENCHMARKS.md).
cuDNN runs both in its default float32 mode (TF32 tensor cores allowed for convolutions, as
PyTorch ships) and in strict float32 (allow_tf32 = False, the same arithmetic as ours).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import inv_conv
from inv_conv import _cuda

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import env  # noqa: E402

SCENARIOS = {
    "S1": (64, 12, 32, 32, 3),
    "S2": (64, 48, 64, 64, 3),
    "S3": (16, 12, 128, 128, 3),
    "S4": (1, 12, 32, 32, 3),
}
ORDER = "TL"


def timed(fn, reps, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def wall(fn, reps, warmup=5):
    """Milliseconds per call from the wall clock over `reps` back-to-back calls (one
    synchronization at the end): throughput, bounded by host or device, whichever is slower."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def cudnn(tf32: bool):
    class Ctx:
        def __enter__(self):
            self.old = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = tf32

        def __exit__(self, *a):
            torch.backends.cudnn.allow_tf32 = self.old

    return Ctx()


def dense_triangular_solve_ms(y, w, reps):
    """x = A⁻¹y with A as a dense D×D unit lower-triangular matrix (pixel-major order from the
    TL corner, channels ascending), the batch as right-hand sides: cuBLAS trsm."""
    b, c, h, wd = y.shape
    d = c * h * wd
    basis = torch.eye(d, device=y.device, dtype=y.dtype).reshape(d, c, h, wd)
    cols = torch.cat([_cuda.forward(basis[i : i + 2048].contiguous(), w, ORDER) for i in range(0, d, 2048)])
    a = cols.reshape(d, d).T  # A[:, k] = A e_k
    perm = torch.arange(d, device=y.device).reshape(c, h, wd).permute(1, 2, 0).reshape(-1)
    a_p = a[perm][:, perm].contiguous()
    rhs = y.reshape(b, d)[:, perm].T.contiguous()
    assert torch.allclose(torch.triu(a_p, 1), torch.zeros_like(a_p)), "A is not lower-triangular in this order"
    sol = torch.linalg.solve_triangular(a_p, rhs, upper=False, unitriangular=True)
    x = torch.empty_like(sol)
    x[perm] = sol
    err = ((x.T.reshape(y.shape) - _cuda.inverse(y, w, ORDER)).norm() / x.norm()).item()
    ms = timed(lambda: torch.linalg.solve_triangular(a_p, rhs, upper=False, unitriangular=True), reps)
    del a, a_p, cols, basis
    torch.cuda.empty_cache()
    return ms, err


def graphed(fn, reps, calls=20):
    """Milliseconds per call of `calls` calls captured in one CUDA graph and replayed: the device
    time of a small op with the host taken away, as under torch.compile(mode="reduce-overhead")
    (which replays graphs too)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return timed(graph.replay, reps) / calls


def kernel_breakdown(step, reps=10):
    """Device time per step of each kernel the step launches (torch.profiler), largest first."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    per_kernel = {}
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[ev.name] = per_kernel.get(ev.name, 0.0) + ev.device_time / 1e3 / reps
    return sorted(per_kernel.items(), key=lambda kv: -kv[1])


def run(reps: int, kernels: bool = False):
    dev = torch.device("cuda")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    info = _cuda.device_info(0)
    first_use_s = time.perf_counter() - t0
    rows = []
    for name, (b, c, h, wd, k) in SCENARIOS.items():
        x = torch.randn(b, c, h, wd, device=dev)
        w = torch.randn(c, c, k, k, device=dev) / (2 * (c * k * k) ** 0.5)
        g = torch.randn_like(x)
        y = _cuda.forward(x, w, ORDER)
        xpad = F.pad(x, (k - 1, 0, k - 1, 0))
        r = {"scenario": name, "shape": [b, c, h, wd, k]}
        r["forward"] = timed(lambda: _cuda.forward(x, w, ORDER), reps)
        r["inverse"] = timed(lambda: _cuda.inverse(y, w, ORDER), reps)
        r["dy"] = timed(lambda: _cuda.inverse_adjoint(g, w, ORDER), reps)
        r["dw"] = timed(lambda: _cuda.weight_grad(x, g, ORDER, k, k), reps)
        r["fwd_adjoint"] = timed(lambda: _cuda.forward_adjoint(g, w, ORDER), reps)
        for tf32 in (True, False):
            tag = "tf32" if tf32 else "fp32"
            with cudnn(tf32):
                r[f"cudnn_conv_{tag}"] = timed(lambda: F.conv2d(xpad, w), reps)
                r[f"cudnn_wgrad_{tag}"] = timed(lambda: torch.nn.grad.conv2d_weight(xpad, w.shape, g), reps)
        if name == "S2":  # A/B: the generic kernels (INV_CONV_CUDA_GENERIC=1) in the same process
            with env("INV_CONV_CUDA_GENERIC", "1"):
                r["forward_generic"] = timed(lambda: _cuda.forward(x, w, ORDER), reps)
                r["inverse_generic"] = timed(lambda: _cuda.inverse(y, w, ORDER), reps)
                r["dy_generic"] = timed(lambda: _cuda.inverse_adjoint(g, w, ORDER), reps)
                r["dw_generic"] = timed(lambda: _cuda.weight_grad(x, g, ORDER, k, k), reps)
        # A/B: the sweep's CTAs per sample (INV_CONV_SWEEP_CTAS; 1 = one block per sample; a
        # setting that does not fit the shape falls back to the default plan).
        for ctas in ("1", "2", "4", "8"):
            with env("INV_CONV_SWEEP_CTAS", ctas):
                r[f"inverse_ctas{ctas}"] = timed(lambda: _cuda.inverse(y, w, ORDER), reps)
        r["inverse_rel_err"] = ((_cuda.forward(_cuda.inverse(y, w, ORDER), w, ORDER) - y).norm() / y.norm()).item()
        if c * h * wd <= 12288:
            r["dense_trsm"], r["dense_trsm_err"] = dense_triangular_solve_ms(y, w, max(5, reps // 5))
        yr = y.clone().requires_grad_()
        wr = w.clone().requires_grad_()
        xr = xpad.clone().requires_grad_()

        def ours_autograd_step():
            inv_conv.inv_conv2d(yr, wr, ORDER).backward(g)

        def cudnn_step():
            F.conv2d(xr, wr).backward(g)

        r["step_ours_autograd"] = timed(ours_autograd_step, reps)
        for tf32 in (True, False):
            with cudnn(tf32):
                r[f"step_cudnn_{'tf32' if tf32 else 'fp32'}"] = timed(cudnn_step, reps)
        if kernels:
            r["kernels"] = kernel_breakdown(ours_autograd_step)
        if name == "S1":
            def ours_step():
                xs = _cuda.inverse(y, w, ORDER)
                u = _cuda.inverse_adjoint(g, w, ORDER)
                return _cuda.weight_grad(xs, u, ORDER, k, k).neg_()

            r["step_ours"] = timed(ours_step, reps)
            r["step_ours_autograd_wall"] = wall(ours_autograd_step, 4 * reps)
            r["step_cudnn_tf32_wall"] = wall(cudnn_step, 4 * reps)
            # Host overhead of the autograd step: a problem whose kernels take a few µs.
            yt = torch.randn(1, 4, 8, 8, device="cuda", requires_grad=True)
            wt = (torch.randn(4, 4, 3, 3, device="cuda") * 0.1).requires_grad_()
            gt = torch.randn(1, 4, 8, 8, device="cuda")
            r["step_tiny_autograd_wall"] = wall(lambda: inv_conv.inv_conv2d(yt, wt, ORDER).backward(gt), 4 * reps)
        rows.append(r)
    return info, first_use_s, rows


# The flow presets' masked-convolution shapes (B = 64): where the one-launch solve runs.
PRESET_SHAPES = [(64, 12, 32, 32), (64, 12, 16, 16), (64, 24, 16, 16), (64, 24, 8, 8)]
# A/B settings there: the default plan, each `solve_regs` lane count and the generic kernels.
LANE_SETTINGS = [("default", None), ("generic", ("INV_CONV_CUDA_GENERIC", "1"))] + [
    (f"tsplit{n}", ("INV_CONV_SOLVE_TSPLIT", n)) for n in ("1", "2", "4", "8")
]
# Images too large for one block (S3 and larger): `solve_regs` one launch per tile diagonal,
# each tile side cap (INV_CONV_SOLVE_TILE), against the banded sweep (4 CTAs per sample, the
# route before tiles) and the generic kernels.
TILED_SHAPES = [(16, 12, 128, 128), (4, 12, 256, 256), (16, 24, 64, 64)]
TILE_SETTINGS = [("default", None), ("band4", ("INV_CONV_SWEEP_CTAS", "4")),
                 ("generic", ("INV_CONV_CUDA_GENERIC", "1"))] + [
    (f"tile{n}", ("INV_CONV_SOLVE_TILE", n)) for n in ("16", "32", "48")
]

# Channels in groups of 16 (S2, celeba64's third level, others): the register-blocked sweep
# (`sweep_blk2`) with each tap split against `sweep_tile2` (INV_CONV_SWEEP_BLK=0), its one-CTA
# variant (INV_CONV_SWEEP_CTAS=1) and the generic kernels.
WIDE_SHAPES = [(64, 48, 64, 64), (64, 48, 8, 8), (64, 16, 32, 32), (16, 32, 64, 64)]
WIDE_SETTINGS = [("default", None), ("tile", ("INV_CONV_SWEEP_BLK", "0")),
                 ("ctas1", ("INV_CONV_SWEEP_CTAS", "1")),
                 ("generic", ("INV_CONV_CUDA_GENERIC", "1"))] + [
    (f"tsplit{n}", ("INV_CONV_SOLVE_TSPLIT", n)) for n in ("2", "4", "8")
]


def solve_variants(reps: int, shapes=PRESET_SHAPES, settings=LANE_SETTINGS):
    """Inverse and adjoint of each shape under each A/B setting (an environment switch the
    backend reads at each call), by events and in CUDA graphs."""
    out = []
    for b, c, h, wd in shapes:
        y = torch.randn(b, c, h, wd, device="cuda")
        w = torch.randn(c, c, 3, 3, device="cuda") / (2 * 3 * c**0.5)
        r = {"shape": [b, c, h, wd]}
        for key, setting in settings:
            with env(*setting) if setting else contextlib.nullcontext():
                for op, fn in (("inverse", _cuda.inverse), ("dy", _cuda.inverse_adjoint)):
                    r[f"{op}_{key}"] = timed(lambda: fn(y, w, ORDER), reps)
                    r[f"{op}_{key}_graph"] = graphed(lambda: fn(y, w, ORDER), reps)
        out.append(r)
    return out


def solve_table(solve_rows, settings=LANE_SETTINGS, what="the presets' shapes (tsplitN: "
                "INV_CONV_SOLVE_TSPLIT=N, a count the shape has no variant for falls back to the "
                "generic kernels; generic: INV_CONV_CUDA_GENERIC=1)"):
    keys = [k for k, _ in settings]

    def grid(title, suffix):
        lines = [title, "| shape | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for r in solve_rows:
            cells = [f"{r[f'inverse_{k}{suffix}']:.4f} / {r[f'dy_{k}{suffix}']:.4f}" for k in keys]
            lines.append(f"| {tuple(r['shape'])} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    return grid(f"inverse / dy at {what}, ms:", "") + "\n\n" + grid(
        "the same in CUDA graphs (ms per call, 20 calls per graph: device time without the host):", "_graph"
    )


# The sampling direction of the presets' Inverse-Flow units: four masked convolutions in one
# launch (conv2d_chain) on 100 samples, as model_bench's sampling runs them.
CHAIN_SHAPES = [(100, 12, 32, 32), (100, 12, 16, 16), (100, 24, 16, 16), (100, 24, 8, 8)]


def chain_table(reps: int) -> tuple:
    """conv2d_chain of four orders: the default kernel and the generic one (INV_CONV_CUDA_GENERIC=1),
    by events and in CUDA graphs."""
    rows, lines = [], ["conv2d_chain, four layers (ms; generic: INV_CONV_CUDA_GENERIC=1; graph: "
                       "20 calls per CUDA graph)", "| shape | default | generic | default graph | generic graph |",
                       "|---|---|---|---|---|"]
    for b, c, h, wd in CHAIN_SHAPES:
        x = torch.randn(b, c, h, wd, device="cuda")
        ws = [torch.randn(c, c, 3, 3, device="cuda") / (3 * c**0.5) for _ in range(4)]
        r = {"shape": [b, c, h, wd]}
        for key, setting in (("default", None), ("generic", ("INV_CONV_CUDA_GENERIC", "1"))):
            with env(*setting) if setting else contextlib.nullcontext():
                call = lambda: inv_conv.conv2d_chain(x, ws, ["BR", "BL", "TR", "TL"])  # noqa: E731
                r[key], r[f"{key}_graph"] = timed(call, reps), graphed(call, reps)
        rows.append(r)
        lines.append(f"| {(b, c, h, wd)} | {r['default']:.4f} | {r['generic']:.4f} | "
                     f"{r['default_graph']:.4f} | {r['generic_graph']:.4f} |")
    return rows, "\n".join(lines)


def tiled_table(reps: int) -> tuple:
    rows = solve_variants(reps, TILED_SHAPES, TILE_SETTINGS)
    return rows, solve_table(rows, TILE_SETTINGS, "images too large for one block (tileN: "
                             "INV_CONV_SOLVE_TILE=N; band4: INV_CONV_SWEEP_CTAS=4, the banded sweep)")


def wide_table(reps: int) -> tuple:
    rows = solve_variants(reps, WIDE_SHAPES, WIDE_SETTINGS)
    return rows, solve_table(rows, WIDE_SETTINGS, "channels in groups of 16 (tile: INV_CONV_SWEEP_BLK=0, "
                             "sweep_tile2; ctas1: INV_CONV_SWEEP_CTAS=1, sweep_blk; tsplitN: "
                             "INV_CONV_SOLVE_TSPLIT=N tap parts, sweep_tile2 where the plan has none)")


def table(info, first_use_s, rows):
    lines = [
        f"GPU: {torch.cuda.get_device_name(0)} ({info['arch']}, {info['sm_count']} SMs); torch {torch.__version__}; "
        f"NVRTC {info['nvrtc_version'][0]}.{info['nvrtc_version'][1]} ({info['nvrtc_path']})",
        f"first use: NVRTC compile {info['compile_ms']:.0f} ms, module load {info['load_ms']:.1f} ms "
        f"(device_info call {first_use_s * 1e3:.0f} ms)",
        "times in ms (median of CUDA-event timings)",
        "| scenario | forward | cuDNN conv tf32/fp32 | inverse | dense trsm | dy | dw | cuDNN wgrad tf32/fp32 | Aᵀg | inv rel err |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        trsm = f"{r['dense_trsm']:.3f}" if "dense_trsm" in r else "—"
        lines.append(
            f"| {r['scenario']} {tuple(r['shape'])} | {r['forward']:.4f} | {r['cudnn_conv_tf32']:.4f} / {r['cudnn_conv_fp32']:.4f} "
            f"| {r['inverse']:.4f} | {trsm} | {r['dy']:.4f} | {r['dw']:.4f} | {r['cudnn_wgrad_tf32']:.4f} / {r['cudnn_wgrad_fp32']:.4f} "
            f"| {r['fwd_adjoint']:.4f} | {r['inverse_rel_err']:.1e} |"
        )
    lines.append("inverse by CTAs per sample (INV_CONV_SWEEP_CTAS=1/2/4/8; ms): " + "; ".join(
        f"{r['scenario']} " + " / ".join(f"{r[f'inverse_ctas{n}']:.4f}" for n in (1, 2, 4, 8)) for r in rows))
    for r in rows:
        if "inverse_generic" in r:
            lines.append(
                f"{r['scenario']} generic kernels (INV_CONV_CUDA_GENERIC=1): forward {r['forward_generic']:.4f}, "
                f"inverse {r['inverse_generic']:.4f}, dy {r['dy_generic']:.4f}, dw {r['dw_generic']:.4f}"
            )
    lines.append("layer training step (inverse forward + backward through autograd) vs a cuDNN conv layer's (conv2d forward + backward):")
    lines.append("| scenario | ours ms | cuDNN tf32 ms | cuDNN fp32 ms | ratio vs tf32 | ratio vs fp32 |")
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        o, t, f = r["step_ours_autograd"], r["step_cudnn_tf32"], r["step_cudnn_fp32"]
        lines.append(f"| {r['scenario']} {tuple(r['shape'])} | {o:.4f} | {t:.4f} | {f:.4f} | {o / t:.2f}x | {o / f:.2f}x |")
    for r in rows:
        if "kernels" in r:
            lines.append(f"{r['scenario']} kernels per layer step (ms, torch.profiler): " + ", ".join(
                f"{name.split('(')[0][:40]} {ms:.4f}" for name, ms in r["kernels"][:12]))
    s1 = rows[0]
    lines.append(
        f"S1 training step: ours {s1['step_ours']:.4f} ms (raw ops), {s1['step_ours_autograd']:.4f} ms (autograd through "
        f"inv_conv.inv_conv2d); cuDNN conv layer {s1['step_cudnn_tf32']:.4f} ms tf32 / {s1['step_cudnn_fp32']:.4f} ms fp32"
    )
    lines.append(
        f"S1 training step, wall clock per step over back-to-back steps: ours (autograd) {s1['step_ours_autograd_wall']:.4f} ms, "
        f"cuDNN conv layer (tf32) {s1['step_cudnn_tf32_wall']:.4f} ms; host overhead of our autograd step "
        f"(1×4×8×8 problem) {s1['step_tiny_autograd_wall']:.4f} ms"
    )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--json", default=None)
    ap.add_argument("--kernels", action="store_true", help="also print each kernel's device time per layer step")
    ap.add_argument("--solve-only", action="store_true", help="only the solve and chain tables")
    args = ap.parse_args()
    out = {"date": time.strftime("%Y-%m-%d")}
    if not args.solve_only:
        info, first, rows = run(args.reps, args.kernels)
        out.update(info=info, first_use_s=first, rows=rows)
        print(table(info, first, rows))
    out["solve_variants"] = solve_variants(args.reps)
    print(solve_table(out["solve_variants"]))
    out["tiled_variants"], text = tiled_table(args.reps)
    print(text)
    out["wide_variants"], text = wide_table(args.reps)
    print(text)
    out["chain"], text = chain_table(args.reps)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
