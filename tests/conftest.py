from typing import Any, Mapping

import pytest
import torch

ORDERS = ("TL", "TR", "BL", "BR")

# (B, C, H, W, KH, KW): odd and non-square images and kernels, C = 1, C not a multiple of 4, K = 1.
SHAPES = [
    (2, 3, 5, 7, 3, 3),
    (1, 1, 4, 3, 3, 3),
    (3, 5, 6, 4, 2, 3),
    (2, 4, 3, 5, 1, 1),
    (1, 2, 7, 2, 5, 2),
]


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """Every backend a test body runs on (candle's ``test_device!``): the CPU always, CUDA
    marked ``cuda`` (deselected by ``-m "not cuda"``, skipped below where there is no GPU)."""
    return request.param


def random_problem(shape, dtype=torch.float64, weight_scale=0.3, generator=None, device="cpu"):
    """(x, weight) of ``shape`` = (B, C, H, W, KH, KW), drawn on the CPU and moved to ``device``
    (so a seeded ``generator`` gives the same values on every device)."""
    b, c, h, w, kh, kw = shape
    x = torch.randn(b, c, h, w, dtype=dtype, generator=generator)
    weight = torch.randn(c, c, kh, kw, dtype=dtype, generator=generator) * weight_scale
    return x.to(device), weight.to(device)


def _inv_conv_available() -> bool:
    try:
        import inv_conv  # noqa: F401
    except ImportError:
        return False
    return True


HAS_INV_CONV = _inv_conv_available()
needs_inv_conv = pytest.mark.skipif(not HAS_INV_CONV, reason="inv_conv not importable")


def randomize_parameters(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Move every parameter away from its (often identity) initial value."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def set_args(settings: Mapping[str, Any]) -> list[str]:
    """``--set key=value`` for every setting, in order: how the CLI tests pass a config."""
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def digits_train_args(settings: Mapping[str, Any]) -> list[str]:
    """``inv-flow train --preset digits`` with ``settings`` (see :func:`set_args`)."""
    return ["train", "--preset", "digits", *set_args(settings)]


def pytest_collection_modifyitems(config, items):
    from inv_conv import cuda_available

    if cuda_available() and torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with a driver and NVRTC")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
