"""Whole-model benchmark: Inverse-Flow, FInC Flow and Glow models of the inv_flow presets.

    python benches/model_bench.py                                   # GPU: cifar10, imagenet64, celeba64
    python benches/model_bench.py --presets cifar10 --modes eager,reduce-overhead
    python benches/model_bench.py --device cpu --presets digits     # CPU: wall time, small preset
    python benches/model_bench.py --profile cifar10                 # + where the time goes, per layer kind

For each preset × family × mode (eager, torch.compile default, torch.compile reduce-overhead):
drawing 100 samples, the density of a batch (no grad), and a full training step with Adam
(zero_grad, bits/dim loss, backward, step), each the median of repeats after warm-up (CUDA
events on a GPU, wall time on the CPU), and the peak memory of the training step. Compilation
time is reported separately. The models are the presets' architectures with ``family`` set, as
``inv-flow compare`` builds them (same data shape, steps and coupling widths).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

from inv_flow.flows import bits_per_dim
from inv_flow.models import build_model, get_preset
from timing import median_ms

FAMILIES = ("inverse_flow", "finc_flow", "glow")
MODES = ("eager", "default", "reduce-overhead")


def timer(device: torch.device):
    """fn, reps, warmup -> median milliseconds per call."""

    def run(fn, reps: int, warmup: int) -> float:
        if device.type != "cuda":
            return median_ms(fn, reps, warmup)
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize(device)
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in pairs:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return statistics.median(s.elapsed_time(e) for s, e in pairs)

    return run


def build(preset: str, family: str, device: torch.device, batch: torch.Tensor):
    cfg = get_preset(preset)
    cfg["family"] = family
    model = build_model(cfg, tuple(cfg["image_shape"])).to(device)
    with torch.no_grad():  # ActNorm's data-dependent initialisation happens here, eagerly
        model(batch)
    return model


def data(preset: str, batch_size: int, device: torch.device) -> torch.Tensor:
    shape = tuple(get_preset(preset)["image_shape"])
    return torch.randint(0, 256, (batch_size, *shape), device=device).float()


def measure(preset, family, mode, device, args):
    torch.manual_seed(0)
    batch = data(preset, args.batch, device)
    model = build(preset, family, device, batch)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    num_dims = model.num_dims

    def loss_of(x):
        return bits_per_dim(model(x)[1], num_dims).mean()

    def sample():
        return model.sample(args.samples)

    def density():
        with torch.no_grad():
            return model(batch)[1]

    if mode != "eager":
        if "step" in args.compiled:
            loss_of = torch.compile(loss_of, mode=mode)
        if "sample" in args.compiled:
            sample = torch.compile(sample, mode=mode)
        if "density" in args.compiled:
            density = torch.compile(density, mode=mode)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_of(batch).backward()
        optimizer.step()

    run = timer(device)
    row = {"preset": preset, "family": family, "mode": mode, "params": params}
    t0 = time.perf_counter()
    for fn in (sample, density, step):  # first calls: compilation (and NVRTC, cuDNN autotune)
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row["first_call_s"] = time.perf_counter() - t0
    row["sample_ms"] = run(sample, args.reps, 3)
    row["density_ms"] = run(density, args.reps, 3)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row["step_ms"] = run(step, args.reps, 3)
    if device.type == "cuda":
        row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


@contextlib.contextmanager
def labelled_layers(model):
    """Wraps forward and reverse of every layer of the flow in a profiler label (its class)."""
    originals = []
    for layer in model.layers:
        name = type(layer).__name__
        for method in ("forward", "reverse"):
            fn = getattr(layer, method)

            def wrapped(*a, __fn=fn, __label=f"{name}.{method}", **k):
                with torch.profiler.record_function(__label):
                    return __fn(*a, **k)

            originals.append((layer, method))
            setattr(layer, method, wrapped)
    try:
        yield
    finally:
        for layer, method in originals:
            delattr(layer, method)


def profile(preset: str, device: torch.device, args) -> str:
    """Host (CPU) and kernel (device) time per layer kind, for one eager training step and one
    draw of samples per family."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    lines = [f"profile, {preset}, eager, B={args.batch}, {args.samples} samples: per layer kind, "
             "host = CPU time inside the layer's calls, device = kernel time they launched (ms)"]
    for family in args.families:
        torch.manual_seed(0)
        batch = data(preset, args.batch, device)
        model = build(preset, family, device, batch)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        what = {
            "train step": lambda: (optimizer.zero_grad(set_to_none=True),
                                   bits_per_dim(model(batch)[1], model.num_dims).mean().backward(),
                                   optimizer.step()),
            "sample": lambda: model.sample(args.samples),
        }
        for label, fn in what.items():
            fn()
            torch.cuda.synchronize(device)
            with labelled_layers(model), torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize(device)
            events = [e for e in prof.key_averages() if e.key.endswith((".forward", ".reverse"))]
            total_host = sum(e.cpu_time_total for e in events) / 1e3
            total_dev = sum(getattr(e, "device_time_total", 0.0) for e in events) / 1e3
            lines.append(f"{family} {label}: layers host {total_host:.2f} ms, device {total_dev:.2f} ms")
            for e in sorted(events, key=lambda e: -e.cpu_time_total):
                lines.append(f"  {e.key:32s} calls {e.count:5d}  host {e.cpu_time_total / 1e3:8.2f}  "
                             f"device {getattr(e, 'device_time_total', 0.0) / 1e3:8.2f}")
    return "\n".join(lines)


def table(rows, device) -> str:
    clock = "CUDA events" if device.type == "cuda" else "wall clock"
    out = [f"times in ms, median ({clock}); sample = {rows[0]['samples']} samples, density and step at B = {rows[0]['batch']}",
           "| preset | family | mode | params | sample | density | train step | peak MB | first call s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['preset']} | {r['family']} | {r['mode']} | | failed: {r['error']} | | | | |")
            continue
        out.append(f"| {r['preset']} | {r['family']} | {r['mode']} | {r['params']:,} | {r['sample_ms']:.2f} | "
                   f"{r['density_ms']:.2f} | {r['step_ms']:.2f} | {r.get('peak_mem_mb', 0):.0f} | {r['first_call_s']:.1f} |")
    ratios = []
    by_key = {(r["preset"], r["family"], r["mode"]): r for r in rows if "error" not in r}
    for (preset, family, mode), r in by_key.items():
        if family != "inverse_flow":
            continue
        for other in ("finc_flow", "glow"):
            o = by_key.get((preset, other, mode))
            if o:
                ratios.append(f"| {preset} | {mode} | {other} | {r['sample_ms'] / o['sample_ms']:.2f} | "
                              f"{r['step_ms'] / o['step_ms']:.2f} |")
    if ratios:
        out += ["", "inverse_flow relative to the other families (same preset and mode)",
                "| preset | mode | vs | sample ratio | train step ratio |", "|---|---|---|---|---|"] + ratios
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", default=None, help="comma-separated (GPU default cifar10,imagenet64,celeba64; CPU digits)")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--compiled", default="sample,density,step",
                    help="what the compiled modes compile (the rest stays eager)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--profile", default=None, help="also profile this preset (GPU only)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    presets = (args.presets or ("cifar10,imagenet64,celeba64" if device.type == "cuda" else "digits")).split(",")
    args.families = args.families.split(",")
    args.compiled = args.compiled.split(",")
    rows = []
    for preset in presets:
        for mode in args.modes.split(","):
            for family in args.families:
                try:
                    row = measure(preset, family, mode, device, args)
                except Exception as e:  # a failed compile is a row, not the end of the run
                    row = {"preset": preset, "family": family, "mode": mode, "error": f"{type(e).__name__}: {str(e)[:120]}"}
                row.update(samples=args.samples, batch=args.batch)
                rows.append(row)
                print(json.dumps(row), flush=True)
                torch._dynamo.reset()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__}; compiled modes compile: {','.join(args.compiled)}")
    print(table(rows, device))
    if args.profile and device.type == "cuda":
        print()
        print(profile(args.profile, device, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
