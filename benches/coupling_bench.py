"""The coupling network (the CNN every family shares) in NCHW and channels-last memory format,
alone and in whole models.

    python benches/coupling_bench.py                    # GPU: the imagenet64 preset's two CNN shapes, B = 100
    python benches/coupling_bench.py --models           # + whole-model sample / eager step, channels-last off / on

The CNN of `inv_flow.layers.AffineCoupling` (conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3,
512 hidden channels) at the preset's two levels, each layout with TF32 on (PyTorch's default
for convolutions) and off: the whole CNN and each module, CUDA-event medians. ``--models``
times the presets' three families with ``inv_flow.layers.coupling.CHANNELS_LAST_ON_CUDA`` off
and on, alternating, in one process (model_bench's interleaved timing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import cuda_median_ms  # noqa: E402


def cnn_table(batch: int, hidden: int, reps: int) -> str:
    lines = [f"coupling CNN, B = {batch}, hidden {hidden} (ms: the CNN; then each module)",
             "| input | layout | TF32 | CNN | modules |", "|---|---|---|---|---|"]
    old_tf32 = torch.backends.cudnn.allow_tf32
    try:
        for cin, side, cout in [(6, 32, 12), (12, 16, 24)]:  # imagenet64's two levels
            for channels_last in (False, True):
                for tf32 in (True, False):
                    torch.backends.cudnn.allow_tf32 = tf32
                    net = nn.Sequential(nn.Conv2d(cin, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1),
                                        nn.ReLU(), nn.Conv2d(hidden, cout, 3, padding=1)).cuda()
                    x = torch.randn(batch, cin, side, side, device="cuda")
                    if channels_last:
                        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
                    with torch.no_grad():
                        whole = cuda_median_ms(lambda: net(x), reps)
                        parts, h = [], x
                        for module in net:
                            parts.append(cuda_median_ms(lambda: module(h), reps))
                            h = module(h)
                    lines.append(f"| {cin} × {side}² | {'channels-last' if channels_last else 'NCHW'} | "
                                 f"{'on' if tf32 else 'off'} | {whole:.3f} | {' / '.join(f'{p:.3f}' for p in parts)} |")
    finally:
        torch.backends.cudnn.allow_tf32 = old_tf32
    return "\n".join(lines)


def models_table(reps: int) -> str:
    import inv_flow.layers.coupling as coupling
    import model_bench

    args = argparse.Namespace(batch=64, samples=100, compiled="", reps=reps,
                              families=list(model_bench.FAMILIES))
    lines = ["whole models, eager (ms; channels-last couplings off / on, alternating)",
             "| preset | coupling CNN | " + " | ".join(f"{f} sample / step" for f in args.families) + " |",
             "|---|---|" + "---|" * len(args.families)]
    old = coupling.CHANNELS_LAST_ON_CUDA
    try:
        for preset in ("imagenet64", "cifar10"):
            for flag in (False, True, False, True):
                coupling.CHANNELS_LAST_ON_CUDA = flag
                rows = {r["family"]: r for r in model_bench.measure_interleaved(preset, "eager", torch.device("cuda"), args)}
                cells = [f"{rows[f]['sample_ms']:.2f} / {rows[f]['step_ms']:.2f}" if "sample_ms" in rows.get(f, {})
                         else "failed" for f in args.families]
                lines.append(f"| {preset} | {'channels-last' if flag else 'NCHW'} | " + " | ".join(cells) + " |")
    finally:
        coupling.CHANNELS_LAST_ON_CUDA = old
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--models", action="store_true", help="also the whole-model A/B")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("coupling_bench: needs a CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        sys.exit(2)
    print(cnn_table(args.batch, args.hidden, args.reps))
    if args.models:
        print(models_table(max(5, args.reps // 2)))


if __name__ == "__main__":
    main()
