"""Inverse-Flow on CIFAR-10: a thin wrapper around `inv-flow train --preset cifar10`.

    python experiments/inv_flow_cifar10_multi_GPUs.py [--preset NAME] [--set key=value ...] [--resume PATH]

Every option is described in docs/TRAINING.md.  Multi-GPU training (torchrun) comes with the
distributed-training work; today this runs on one device.
"""

import sys
from pathlib import Path

try:
    from inv_flow.cli import main
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    from inv_flow.cli import main

DEFAULT_PRESET = "cifar10"


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--preset" not in arguments and "--resume" not in arguments:
        arguments = ["--preset", DEFAULT_PRESET, *arguments]
    sys.exit(main(["train", *arguments]))
