"""Inverse-Flow on downsampled ImageNet (imagenet32; pass --preset imagenet64 for 64x64): a thin wrapper around `inv-flow train --preset imagenet32`.

    python experiments/inv_flow_imagenet_multi_gpu.py [--preset NAME] [--set key=value ...] [--resume PATH]

On several GPUs (one process per GPU, NCCL, DistributedDataParallel; --set batch_size is the
global batch, split evenly over the processes):

    NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node=N experiments/inv_flow_imagenet_multi_gpu.py [--set key=value ...] [--resume PATH]

and on the CPU with gloo: add ``--set device=cpu``.  Every option is described in
docs/TRAINING.md ("Distributed training" for torchrun).
"""

import sys
from pathlib import Path

try:
    from inv_flow.cli import main
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    from inv_flow.cli import main

DEFAULT_PRESET = "imagenet32"


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--preset" not in arguments and "--resume" not in arguments:
        arguments = ["--preset", DEFAULT_PRESET, *arguments]
    sys.exit(main(["train", *arguments]))
