"""inv_flow: normalizing flows with exact invertible convolutions (Inverse-Flow,
Nagar & Varma, AISTATS 2025) on top of ``inv_conv``.

Importing this package does not import ``inv_conv``; layers that need it import it when
constructed.  Without PyTorch the package still imports (so that ``inv-flow`` can say in one
line what to install), and its torch-based names raise ImportError when used.
"""

try:
    import torch  # noqa: F401
except ImportError as _torch_error:
    _MISSING_TORCH = (f"inv_flow needs PyTorch ({_torch_error}); install the training extra: "
                      "pip install 'inv_conv[flow]'")
    __all__: list = []

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(_MISSING_TORCH)
else:
    from .distributions import DiagonalGaussian
    from .flows import FlowSequential, bits_per_dim
    from .layers import initialize_actnorm
    from .models import PRESETS, build_model, get_preset

    __all__ = ["DiagonalGaussian", "FlowSequential", "PRESETS", "bits_per_dim", "build_model",
               "get_preset", "initialize_actnorm"]
