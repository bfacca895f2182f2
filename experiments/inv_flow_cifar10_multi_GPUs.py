"""Inverse-Flow on CIFAR-10: a thin wrapper around `inv-flow train --preset cifar10` (arguments, several GPUs, the CPU: experiments/_train_script.py).

    python experiments/inv_flow_cifar10_multi_GPUs.py [--preset NAME] [--set key=value ...] [--resume PATH]
    NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node=N experiments/inv_flow_cifar10_multi_GPUs.py [--set key=value ...] [--resume PATH]
"""

from _train_script import train

DEFAULT_PRESET = "cifar10"


if __name__ == "__main__":
    train(DEFAULT_PRESET)
