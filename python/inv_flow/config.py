"""Run configuration for ``inv_flow``: one flat dict, resolved key by key.

Resolution order (later wins):

1. :data:`DEFAULTS` below — every option the framework knows, with its type given by its default;
2. the preset (``inv_flow.models.PRESETS[name]``: model settings and ``image_shape`` per dataset);
3. the user's overrides (``--set key=value`` on the command line, or a dict in Python).

An unknown key is an error that lists the valid keys, and string values (from the command line)
are parsed with the type of the key's default, so ``--set lr=3e-4`` gives a float and
``--set actnorm=false`` a bool.  See docs/TRAINING.md for what each option does.
"""

from __future__ import annotations

import ast
import difflib
import math
from typing import Any, Mapping

#: Every option with its default.  The type of each default is the type of the option.
DEFAULTS: dict[str, Any] = {
    # --- run identity --------------------------------------------------------------------
    "name": "inv_flow",          # run name; used in output_dir and checkpoint_path templates
    "notes": "",                 # free text stored with the run (and sent to wandb)
    "preset": "digits",          # which entry of inv_flow.models.PRESETS was applied
    # --- data ------------------------------------------------------------------------------
    "dataset": "",               # dataset name; "" = same as the preset
    "data_root": "./data",       # where the real datasets live (never used for digits)
    "download": False,           # let torchvision download MNIST / CIFAR10 / CelebA
    "image_shape": (1, 8, 8),    # (C, H, W) fed to the model; set by the preset
    "pad_to": (),                # zero-pad images to (H, W) before the model (MNIST 28 -> 32)
    "val_fraction": 0.1,         # share of the training set held out for validation
    "split_seed": 0,             # seed of the train/validation split (fixed across runs)
    "num_workers": 0,            # DataLoader worker processes
    # --- reproducibility / hardware -------------------------------------------------------------
    "seed": 0,                   # seeds torch, numpy, random and the data shuffling
    "device": "auto",            # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1"
    # --- distributed (torchrun; see inv_flow/distributed.py) -------------------------------------
    "dist_backend": "auto",      # "auto" (nccl on GPUs, gloo on the CPU) | "nccl" | "gloo"
    "dist_timeout": 600.0,       # seconds any collective may wait for the other ranks
    "ddp_find_unused_parameters": False,  # DDP option, for models with parameters a step may skip
    # --- optimisation -----------------------------------------------------------------------
    "lr": 1e-3,                  # Adam learning rate after warm-up
    "epochs": 100,               # total number of training epochs
    "batch_size": 100,           # training (and evaluation) batch size
    "warmup_epochs": 1.0,        # linear LR warm-up length in epochs, applied per step
    "grad_clip_norm": 10000.0,   # max global gradient norm; 0 disables clipping
    # --- evaluation --------------------------------------------------------------------------
    "eval_epochs": 1,            # evaluate on validation every N epochs (0 = only at the end)
    "eval_train": False,         # also report the likelihood on (a part of) the training set
    "max_eval_ex": 0,            # cap on examples per evaluation; 0 = the whole split
    # --- sampling / figures --------------------------------------------------------------------
    "sample_epochs": 1,          # write a sample grid every N epochs (0 = never during training)
    "n_samples": 64,             # images per sample grid
    "temperature": 1.0,          # sampling temperature of the prior
    "sample_dir": "{output_dir}/samples",  # where sample grids and figures go
    "plot_recon": False,         # save data-vs-reconstruction figures each sample epoch
    # --- checkpoints ------------------------------------------------------------------------------
    "checkpoint_path": "./{name}_checkpoint.tar",  # the BEST validation model
    "last_checkpoint_path": "{output_dir}/last_checkpoint.tar",  # latest state, for resuming
    "resume": "",                # checkpoint to resume training from ("" = fresh run)
    # --- logging ---------------------------------------------------------------------------------
    "output_dir": "./runs/{name}",  # metrics.jsonl, TensorBoard events, samples
    "log_interval": 100,         # log the training loss every N steps
    "verbose": False,            # also log per-layer log-determinants
    "log_timing": False,         # log mean/std time per batch and per sample
    "progress": True,            # tqdm progress bars
    "tensorboard": True,         # write TensorBoard events if tensorboard is installed
    "wandb": False,              # log to Weights & Biases (imported only when True)
    "wandb_project": "inv_flow",
    "wandb_entity": "",
    # --- model (passed to build_model; presets set most of them; same defaults as
    #     inv_flow.models.MODEL_DEFAULTS) -----------------------------------------------------
    "model": "glow",             # "glow" (multi-scale, coupling), "cnn" (Inverse-Flow CNN), "fc"
    "modified_grad": True,       # True: fast exact parallel backward of inv_conv; False: dense autograd
    "num_blocks": 2,             # glow: levels (squeeze + steps [+ split]); cnn: blocks
    "block_size": 4,             # flow steps per block
    "num_layers": 4,             # fc only: dense layers
    "kernel_size": 3,            # k of the invertible k x k masked convolutions
    "inv_conv": "unit",          # "unit" (TL,TR,BL,BR per step) | "single" | "conv1x1" (Glow)
    "direction": "inverse",      # "inverse" (Inverse-Flow) | "conv" (FInC Flow)
    "coupling_hidden": 512,      # hidden channels of the coupling networks (glow)
    "activation": "none",        # invertible pointwise activation: none | SLR | LLR | Spline | SELU
    "actnorm": True,             # ActNorm layers (data-dependent init on the first batch)
    "split_prior": True,         # glow: factor out half the channels after each level but the last
    "num_levels": 256,           # pixel levels of the data; fixed by the dataset (all serve 0..255)
    "preprocess": "logit",       # "logit" or "center" (after dequantization and /num_levels)
    "logit_alpha": 0.05,         # logit preprocessing: logit(alpha + (1 - 2 alpha) x)
    "spline_bins": 10,           # activation=Spline: number of bins
    "spline_tail_bound": 10.0,   # activation=Spline: tails beyond this are the identity
    "slr_alpha": 0.3,            # activation=SLR: slope of the negative side
    "learn_base": False,         # learnable mean/log-std of the Gaussian base
    "family": "auto",            # "auto" (from inv_conv/direction) | inverse_flow | finc_flow | glow | snf
    "finc_unit": "grouped",      # finc_flow: "grouped" (FInC Flow's unit) | "unit"
    "recon_loss_weight": 1.0,    # snf (self-normalizing layers): initial reconstruction loss weight
    "recon_loss_lr": 0.0,        # snf: step of the adaptive reconstruction weight (0 = fixed)
    "sym_recon_grad": False,     # snf: also train W with the symmetric reconstruction loss
    "sample_true_inv": False,    # snf: sample with the exact inverse (dense solve), not R
    "snf_max_dense_dims": 4096,  # snf: largest C*H*W for the exact (dense) log-determinant
}

#: Settings fixed by the data pipeline, applied after the preset (user overrides still win).

#: Keys whose values are paths/templates that may mention other keys ({name}, {output_dir}).
TEMPLATE_KEYS = ("output_dir", "sample_dir", "checkpoint_path", "last_checkpoint_path")

_TRUE_WORDS = {"1", "true", "yes", "on", "y", "t"}
_FALSE_WORDS = {"0", "false", "no", "off", "n", "f"}


class ConfigError(ValueError):
    """A configuration that cannot run: unknown key, bad value, unknown preset, bad shape."""


def valid_keys(presets: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """All keys a config may hold: :data:`DEFAULTS` plus any key a model preset declares."""
    keys = set(DEFAULTS)
    for preset in (presets or {}).values():
        keys.update(preset)
    return sorted(keys)


def _unknown_key_error(key: str, keys: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, keys, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}.{hint} Valid keys: {', '.join(keys)}")


def parse_bool(text: str) -> bool:
    """Parse 'true/false/1/0/yes/no/on/off' (any case) into a bool."""
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse '3,32,32', '3x32x32' or '(3, 32, 32)' into a tuple of ints."""
    cleaned = text.strip().strip("()[]").replace("x", ",").replace("X", ",")
    if cleaned.lower() in ("", "none"):
        return ()  # "no shape", e.g. pad_to= (no padding)
    parts = [part.strip() for part in cleaned.split(",") if part.strip()]
    return tuple(int(part) for part in parts)


def coerce_value(key: str, value: Any, reference: Any) -> Any:
    """Return ``value`` converted to the type of ``reference`` (the key's default).

    Strings (from the command line) are parsed; non-strings must already have a compatible
    type (an int is accepted for a float option).  Raises :class:`ConfigError` otherwise.
    """
    try:
        if reference is None:
            # A preset key without a typed default: take Python literals, else the raw string.
            if isinstance(value, str):
                try:
                    return ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    return value
            return value
        if isinstance(reference, bool):
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                return parse_bool(value)
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
        elif isinstance(reference, int):
            if isinstance(value, str):
                return int(value.strip().replace("_", ""))
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif isinstance(reference, float):
            if isinstance(value, str):
                return float(value.strip().replace("_", ""))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif isinstance(reference, (tuple, list)):
            if isinstance(value, str):
                return parse_shape(value)
            if isinstance(value, (tuple, list)):
                return tuple(int(v) for v in value)
        elif isinstance(reference, str):
            if isinstance(value, str):
                return value
            if value is None:
                return None  # presets use None for "off" (e.g. activation)
        else:
            return value
    except ValueError as err:
        raise ConfigError(
            f"bad value for {key!r}: {value!r} ({err}); expected {type(reference).__name__} "
            f"like the default {reference!r}"
        ) from None
    raise ConfigError(
        f"bad value for {key!r}: {value!r} has type {type(value).__name__}; expected "
        f"{type(reference).__name__} like the default {reference!r}"
    )


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """Turn ``["lr=1e-3", "epochs=5"]`` into ``{"lr": "1e-3", "epochs": "5"}`` (still strings)."""
    overrides: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def load_presets() -> dict[str, dict[str, Any]]:
    """The model presets from ``inv_flow.models.PRESETS`` (imported lazily: it pulls in torch)."""
    from inv_flow.models import PRESETS  # noqa: PLC0415 - lazy on purpose

    return {name: dict(values) for name, values in PRESETS.items()}


def load_model_defaults() -> dict[str, Any]:
    """``inv_flow.models.MODEL_DEFAULTS``: every key build_model reads is a valid config key,
    even one added there after :data:`DEFAULTS` was last updated."""
    from inv_flow.models import MODEL_DEFAULTS  # noqa: PLC0415

    return dict(MODEL_DEFAULTS)


def resolve_config(
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a full config: ``base`` (default :data:`DEFAULTS`), then the preset, then overrides.

    ``preset`` names an entry of ``presets`` (default: ``inv_flow.models.PRESETS``); ``None``
    uses ``overrides["preset"]`` or the default.  ``base`` lets a saved run's config be the
    starting point (resuming, evaluating a checkpoint).  Template keys (``output_dir``,
    ``checkpoint_path`` ...) are filled with ``{name}`` / ``{output_dir}`` at the end.

    Raises :class:`ConfigError` for an unknown preset, unknown key or badly typed value.
    """
    overrides = dict(overrides or {})
    model_defaults: dict[str, Any] = {}
    if presets is None:
        presets = load_presets()
        model_defaults = load_model_defaults()
    keys = sorted(set(valid_keys(presets)) | set(model_defaults))
    for key in overrides:
        if key not in keys:
            raise _unknown_key_error(key, keys)

    config: dict[str, Any] = dict(DEFAULTS if base is None else base)
    # Types come from DEFAULTS, or from the preset for model keys only presets know.
    reference_types: dict[str, Any] = dict(DEFAULTS)

    # Model keys missing from DEFAULTS take their type from MODEL_DEFAULTS or a preset.
    for key, value in model_defaults.items():
        reference_types.setdefault(key, value)
        config.setdefault(key, value)
    for values in presets.values():
        for key, value in values.items():
            reference_types.setdefault(key, value)

    preset_name = preset if preset is not None else overrides.get("preset")
    if preset_name is None and base is None:
        preset_name = config["preset"]  # a fresh run always starts from a preset
    if preset_name is not None:
        if preset_name not in presets:
            raise ConfigError(
                f"unknown preset {preset_name!r}; available presets: {', '.join(sorted(presets))}"
            )
        for key, value in presets[preset_name].items():
            config[key] = coerce_value(key, value, reference_types[key])
        config["preset"] = preset_name

    for key, value in overrides.items():
        if key == "preset":
            continue  # handled above
        config[key] = coerce_value(key, value, reference_types.get(key))
    if not config.get("dataset"):
        config["dataset"] = config["preset"]
    validate_config(config)
    return fill_templates(config)


def fill_templates(config: dict[str, Any]) -> dict[str, Any]:
    """Substitute ``{name}`` and ``{output_dir}`` in the path options (idempotent)."""
    filled = dict(config)
    filled["output_dir"] = str(filled["output_dir"]).format(name=filled["name"])
    for key in TEMPLATE_KEYS:
        if key == "output_dir":
            continue
        try:
            filled[key] = str(filled[key]).format(name=filled["name"], output_dir=filled["output_dir"])
        except (KeyError, IndexError) as err:
            raise ConfigError(
                f"{key}={filled[key]!r} uses an unknown placeholder {err}; only {{name}} and "
                "{output_dir} are available"
            ) from None
    return filled


def validate_config(config: Mapping[str, Any]) -> None:
    """Range checks that types alone cannot express; raises :class:`ConfigError`."""
    for key, value in config.items():
        # NaN passes every `<` check, and no option means anything at infinity.
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    positive = ("epochs", "batch_size", "n_samples", "log_interval", "kernel_size")
    for key in positive:
        if key in config and config[key] <= 0:
            raise ConfigError(f"{key} must be positive, got {config[key]!r}")
    non_negative = ("eval_epochs", "sample_epochs", "max_eval_ex", "num_workers", "warmup_epochs",
                    "grad_clip_norm", "recon_loss_weight")
    for key in non_negative:
        if key in config and config[key] < 0:
            raise ConfigError(f"{key} must be >= 0, got {config[key]!r}")
    if config.get("dist_backend", "auto") not in ("auto", "nccl", "gloo"):
        raise ConfigError(f"dist_backend must be auto, nccl or gloo, got {config['dist_backend']!r}")
    if config.get("dist_timeout", 1.0) <= 0:
        raise ConfigError(f"dist_timeout must be positive (seconds), got {config['dist_timeout']!r}")
    if not 0.0 < config["val_fraction"] < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {config['val_fraction']!r}")
    if config["lr"] <= 0:
        raise ConfigError(f"lr must be positive, got {config['lr']!r}")
    if config["temperature"] <= 0:
        raise ConfigError(f"temperature must be positive, got {config['temperature']!r}")
    shape = tuple(config["image_shape"])
    if len(shape) != 3 or any(int(s) <= 0 for s in shape):
        raise ConfigError(f"image_shape must be (C, H, W) with positive sizes, got {shape!r}")


def checked_config(config: Any) -> dict[str, Any]:
    """``config`` as a dict, if it is a full, valid config (as :func:`resolve_config` builds)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict from inv_flow.config.resolve_config; got "
                        f"{type(config).__name__}")
    missing = sorted(set(DEFAULTS) - set(config))
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ConfigError(f"config lacks {shown}; build it with "
                          "inv_flow.config.resolve_config(preset, overrides)")
    validate_config(config)
    return dict(config)


def describe_options() -> str:
    """A table of every option and its default (for ``inv-flow options``)."""
    width = max(len(key) for key in DEFAULTS)
    return "\n".join(f"{key:<{width}}  {value!r}" for key, value in DEFAULTS.items())
