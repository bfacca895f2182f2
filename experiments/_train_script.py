"""What the experiment scripts share: each one is ``inv-flow train`` with its own default preset
(``--preset`` or ``--resume`` given on the command line replaces it) and the same arguments:

    python experiments/SCRIPT.py [--preset NAME] [--set key=value ...] [--resume PATH]

On several GPUs (one process per GPU, NCCL, DistributedDataParallel; --set batch_size is the
global batch, split evenly over the processes):

    NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node=N experiments/SCRIPT.py [--set key=value ...] [--resume PATH]

and on the CPU with gloo: add ``--set device=cpu``.  Every option is described in
docs/TRAINING.md ("Distributed training" for torchrun).  The scripts import this module from
their own folder, which Python puts first on ``sys.path`` when it runs a script.
"""

import sys
from pathlib import Path

try:
    from inv_flow.cli import main
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    from inv_flow.cli import main


def train(default_preset: str) -> None:
    """``inv-flow train`` with this process's arguments, ``--preset default_preset`` first
    unless they name a preset or a run to resume; exits with its status."""
    arguments = sys.argv[1:]
    if "--preset" not in arguments and "--resume" not in arguments:
        arguments = ["--preset", default_preset, *arguments]
    sys.exit(main(["train", *arguments]))
