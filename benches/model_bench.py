"""Whole-model benchmark: Inverse-Flow, FInC Flow and Glow models of the inv_flow presets.

    python benches/model_bench.py                                   # GPU: cifar10, imagenet64, celeba64
    python benches/model_bench.py --presets cifar10 --modes eager,reduce-overhead
    python benches/model_bench.py --device cpu --presets digits     # CPU: wall time, small preset
    python benches/model_bench.py --profile cifar10                 # + where the time goes, per layer kind
    python benches/model_bench.py --presets celeba64 --modes eager --ab INV_CONV_SWEEP_BLK=0
                                                                    # + every call again with a switch set

For each preset × family × mode (eager, torch.compile default, torch.compile reduce-overhead):
drawing 100 samples, the density of a batch (no grad), and a full training step with Adam
(zero_grad, bits/dim loss, backward, step), each the median of repeats after warm-up (CUDA
events on a GPU, each call started on an idle device; wall time on the CPU), and the peak memory of the training step. The
families of a preset and mode are timed in turn, repeat after repeat (a drift in the host's
speed then affects all of them alike, so their ratios hold). Compilation
time is reported separately. The models are the presets' architectures with ``family`` set, as
``inv-flow compare`` builds them (same data shape, steps and coupling widths).
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

from inv_flow.flows import bits_per_dim
from inv_flow.models import build_model, get_preset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import env  # noqa: E402

FAMILIES = ("inverse_flow", "finc_flow", "glow")
MODES = ("eager", "default", "reduce-overhead")


class Stopwatch:
    """Times single calls: CUDA events on a GPU, perf_counter on the CPU; ``median(key)`` in
    milliseconds.

    On a GPU each call starts on an idle device (a synchronisation before its start event).
    Without it, the host queues part of a call while the GPU still runs the call before, so a
    host-bound call looked faster by an amount that depended on what ran before it: FInC Flow's
    imagenet64 sampling measured 28.1 and 37.0 ms in one run, the same call after two different
    predecessors (BENCHMARKS.md, tenth session)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.marks: dict[str, list] = {}

    def time(self, key: str, fn) -> None:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            start.record()
            fn()
            end.record()
            self.marks.setdefault(key, []).append((start, end))
        else:
            t0 = time.perf_counter()
            fn()
            self.marks.setdefault(key, []).append((time.perf_counter() - t0) * 1e3)

    def median(self, key: str) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return statistics.median(s.elapsed_time(e) for s, e in self.marks[key])
        return statistics.median(self.marks[key])


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


def prepare(preset, family, mode, device, args):
    """The model of one family with its sample / density / train-step callables (compiled in the
    compiled modes), their first calls done; the row holds params, first-call time and peak
    memory of a training step."""
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

    row = {"preset": preset, "family": family, "mode": mode, "params": params}
    calls = {"sample": sample, "density": density, "step": step}
    t0 = time.perf_counter()
    for fn in calls.values():  # first calls: compilation (and NVRTC, cuDNN autotune)
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row["first_call_s"] = time.perf_counter() - t0
    for _ in range(3):  # warm-up
        for fn in calls.values():
            fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row, calls


def measure_interleaved(preset, mode, device, args):
    """Every family's calls timed in turn, repeat after repeat, so that a drift in the host's or
    the GPU's speed during the run lands on every family alike; medians over the repeats."""
    prepared, rows = {}, []
    for family in args.families:
        try:
            prepared[family] = prepare(preset, family, mode, device, args)
        except Exception as e:  # a failed compile is a row, not the end of the run
            rows.append({"preset": preset, "family": family, "mode": mode,
                         "error": f"{type(e).__name__}: {str(e)[:120]}"})
    watch = Stopwatch(device)
    # With --ab, each call is timed twice per repeat: as is, and with the switch set (same
    # models, same process: the difference is the switch's, not the host's drift).
    settings = [("", None)] + ([("_ab", args.ab)] if args.ab else [])
    for _ in range(args.reps):
        for family, (_, calls) in prepared.items():
            for suffix, setting in settings:
                with env(*setting) if setting else contextlib.nullcontext():
                    for what, fn in calls.items():
                        watch.time(f"{family}.{what}{suffix}", fn)
    for family, (row, _) in prepared.items():
        for what in ("sample", "density", "step"):
            for suffix, _ in settings:
                row[f"{what}_ms{suffix}"] = watch.median(f"{family}.{what}{suffix}")
        rows.append(row)
    return rows


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
            # The kernels themselves (device time, all layers): which launches the time is in.
            kernels = [e for e in prof.key_averages()
                       if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0]
            kernels.sort(key=lambda e: -e.self_device_time_total)
            total_kernels = sum(e.self_device_time_total for e in kernels) / 1e3
            lines.append(f"  kernels: {sum(e.count for e in kernels)} launches, {total_kernels:.2f} ms; top 10:")
            for e in kernels[:10]:
                lines.append(f"    {e.self_device_time_total / 1e3:8.2f} ms  {e.count:5d}×  {e.key[:90]}")
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
    ab = [r for r in rows if "step_ms_ab" in r]
    if ab:
        out += ["", f"A/B in the same process: as is / with {'='.join(ab[0]['ab'])} (ms)",
                "| preset | family | mode | sample | density | train step |", "|---|---|---|---|---|---|"]
        out += [f"| {r['preset']} | {r['family']} | {r['mode']} | "
                + " | ".join(f"{r[f'{w}_ms']:.2f} / {r[f'{w}_ms_ab']:.2f}" for w in ("sample", "density", "step"))
                + " |" for r in ab]
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
    ap.add_argument("--ab", default=None, metavar="NAME=VALUE",
                    help="also time every call with this environment switch set (eager mode only: compiled "
                         "graphs replay the kernels they captured)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.ab is not None:
        name, sep, value = args.ab.partition("=")
        if not sep or not name:
            ap.error(f"--ab expects NAME=VALUE, got {args.ab!r}")
        if args.modes != "eager":
            ap.error(f"--ab needs --modes eager (compiled graphs replay what they captured), got --modes {args.modes}")
        args.ab = (name, value)
    device = torch.device(args.device)
    presets = (args.presets or ("cifar10,imagenet64,celeba64" if device.type == "cuda" else "digits")).split(",")
    args.families = args.families.split(",")
    args.compiled = args.compiled.split(",")
    rows = []
    for preset in presets:
        for mode in args.modes.split(","):
            for row in measure_interleaved(preset, mode, device, args):
                row.update(samples=args.samples, batch=args.batch)
                if args.ab:
                    row["ab"] = list(args.ab)
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
