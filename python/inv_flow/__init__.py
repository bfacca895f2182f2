"""inv_flow: normalizing flows with exact invertible convolutions (Inverse-Flow,
Nagar & Varma, AISTATS 2025) on top of ``inv_conv``.

Importing this package imports neither torch nor ``inv_conv``: the names below load their
modules on first use (so ``inv-flow --help`` is fast and says what to install when torch is
missing), and layers that need ``inv_conv`` import it when constructed.
"""

from importlib import import_module as _import_module
from importlib import metadata as _metadata

try:  # one version source: Cargo.toml, via the package metadata maturin writes
    __version__ = _metadata.version("inv_conv")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

#: public name -> the module that defines it
_LAZY = {
    "DiagonalGaussian": "inv_flow.distributions",
    "FlowSequential": "inv_flow.flows",
    "bits_per_dim": "inv_flow.flows",
    "initialize_actnorm": "inv_flow.layers",
    "PRESETS": "inv_flow.models",
    "build_model": "inv_flow.models",
    "get_preset": "inv_flow.models",
    "Experiment": "inv_flow.experiment",
    "resolve_config": "inv_flow.config",
}

__all__ = ["__version__", *sorted(_LAZY)]


#: submodules reachable as attributes after a plain ``import inv_flow`` (imported on first use)
_SUBMODULES = ("building", "checkpoint", "cli", "compare", "compiled", "config", "data", "distributed",
               "distributions", "experiment", "export", "flows", "layers", "logging_utils", "models",
               "options", "plots", "presets", "resume", "runs", "schedules")


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = _import_module(f"inv_flow.{name}")
    else:
        raise AttributeError(f"module 'inv_flow' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
