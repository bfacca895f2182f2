"""Inverse-Flow on CelebA (celeba64; pass --preset celeba32 or celeba128): a thin wrapper around `inv-flow train --preset celeba64` (arguments, several GPUs, the CPU: experiments/_train_script.py).

    python experiments/inv_flow_celeba_multi_gpu.py [--preset NAME] [--set key=value ...] [--resume PATH]
    NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node=N experiments/inv_flow_celeba_multi_gpu.py [--set key=value ...] [--resume PATH]
"""

from _train_script import train

DEFAULT_PRESET = "celeba64"


if __name__ == "__main__":
    train(DEFAULT_PRESET)
