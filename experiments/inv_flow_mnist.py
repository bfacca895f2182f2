"""Inverse-Flow on MNIST (28x28 zero-padded to 32x32): a thin wrapper around `inv-flow train --preset mnist` (arguments, several GPUs, the CPU: experiments/_train_script.py).

    python experiments/inv_flow_mnist.py [--preset NAME] [--set key=value ...] [--resume PATH]
    NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node=N experiments/inv_flow_mnist.py [--set key=value ...] [--resume PATH]
"""

from _train_script import train

DEFAULT_PRESET = "mnist"


if __name__ == "__main__":
    train(DEFAULT_PRESET)
