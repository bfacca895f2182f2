"""Inverse-Flow on downsampled ImageNet (imagenet32; pass --preset imagenet64 for 64x64): a thin wrapper around `inv-flow train --preset imagenet32` (arguments, several GPUs, the CPU: experiments/_train_script.py).

    python experiments/inv_flow_imagenet_multi_gpu.py [--preset NAME] [--set key=value ...] [--resume PATH]
    NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node=N experiments/inv_flow_imagenet_multi_gpu.py [--set key=value ...] [--resume PATH]
"""

from _train_script import train

DEFAULT_PRESET = "imagenet32"


if __name__ == "__main__":
    train(DEFAULT_PRESET)
