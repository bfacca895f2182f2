"""Every option of ``inv_flow`` in one table: default, type, allowed values and meaning.

:data:`OPTIONS` is the single source for the trainer's defaults (``config.DEFAULTS``), the
model's defaults (``models.MODEL_DEFAULTS``: the options marked ``model``), the range and choice
checks (:func:`check_options`, used by config resolution and by ``build_model``) and the text
``inv-flow options`` prints.  The type of an option is the type of its default.  No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Option:
    """One config key: its default, what it means, and which values it takes."""

    default: Any
    help: str
    group: str
    choices: tuple | None = None   # allowed values (strings), when it is an enumeration
    ge: float | None = None        # value >= ge
    gt: float | None = None        # value > gt
    lt: float | None = None        # value < lt
    model: bool = False            # read by inv_flow.models.build_model

    def rule(self) -> str:
        """The allowed values in words ("" when any value of the type is fine)."""
        if self.choices:
            return " | ".join(str(c) for c in self.choices)
        low = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else ""
        if self.gt == 0 and self.lt is None:
            return "positive"
        high = f"< {self.lt:g}" if self.lt is not None else ""
        return " and ".join(part for part in (low, high) if part)


#: Values of the ``compile`` option.
COMPILE_MODES = ("off", "default", "reduce-overhead", "auto")

OPTIONS: dict[str, Option] = {}
_group = ""


def _add(key: str, default: Any, help: str, **rules: Any) -> None:
    OPTIONS[key] = Option(default, help, _group, **rules)


# --- run identity ---------------------------------------------------------------------------
_group = "run"
_add("name", "inv_flow", "run name: the run folder is runs/<name> (runs/<name>-2, -3 ... when "
     "that one holds files)")
_add("notes", "", "free text stored with the run (and sent to wandb)")
_add("preset", "digits", "which entry of inv_flow.presets.PRESETS was applied")
# --- data -------------------------------------------------------------------------------------
_group = "data"
_add("dataset", "", "dataset name; empty = the preset's name")
_add("data_root", "./data", "where the real datasets live (never used for digits)")
_add("download", False, "let torchvision download MNIST / CIFAR10 / CelebA")
_add("image_shape", (1, 8, 8), "(C, H, W) fed to the model; set by the preset")
_add("source_shape", (), "(C, H, W) of the stored images before pad_to (informational; presets)")
_add("pad_to", (), "zero-pad images to (H, W) before the model (MNIST 28 -> 32)")
_add("val_fraction", 0.1, "share of the training set held out for validation", gt=0.0, lt=1.0)
_add("split_seed", 0, "seed of the train/validation split (fixed across runs)")
_add("num_workers", 0, "DataLoader worker processes", ge=0)
# --- reproducibility / hardware ------------------------------------------------------------------
_group = "hardware"
_add("seed", 0, "seeds torch, numpy, random and the data shuffling")
_add("device", "auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:1 ...")
_add("dist_backend", "auto", "torchrun process group: auto = nccl on GPUs, gloo on the CPU",
     choices=("auto", "nccl", "gloo"))
_add("dist_timeout", 600.0, "seconds any collective may wait for the other ranks", gt=0.0)
_add("ddp_find_unused_parameters", False, "DDP option, for models with parameters a step may skip")
# --- optimisation --------------------------------------------------------------------------------
_group = "optimisation"
_add("lr", 1e-3, "Adam learning rate (after warm-up, before decay)", gt=0.0)
_add("epochs", 100, "total number of training epochs", gt=0)
_add("batch_size", 100, "training and evaluation batch size (global, over all ranks)", gt=0)
_add("warmup_epochs", 1.0, "linear learning-rate warm-up, in epochs (applied per step)", ge=0.0)
_add("lr_schedule", "constant", "learning rate after warm-up: constant, cosine (down to lr_min at "
     "the last step) or exponential (times lr_gamma per epoch)",
     choices=("constant", "cosine", "exponential"))
_add("lr_min", 0.0, "cosine: the learning rate at the last step", ge=0.0)
_add("lr_gamma", 0.95, "exponential: factor per epoch (applied smoothly per step)", gt=0.0)
_add("grad_clip_norm", 10000.0, "max global gradient norm; 0 disables clipping", ge=0.0)
_add("compile", "auto", "torch.compile the training loss (after ActNorm's data-dependent init; a "
     "compiler failure is one warning and eager training): auto = reduce-overhead on CUDA, off "
     "on the CPU", choices=COMPILE_MODES)
# --- evaluation ----------------------------------------------------------------------------------
_group = "evaluation"
_add("eval_epochs", 1, "evaluate on validation every N epochs (0 = only after the last)", ge=0)
_add("eval_train", False, "also report the likelihood on (a part of) the training set")
_add("max_eval_ex", 0, "cap on examples per evaluation; 0 = the whole split", ge=0)
# --- sampling / figures --------------------------------------------------------------------------
_group = "sampling"
_add("sample_epochs", 1, "write a sample grid every N epochs (0 = never during training)", ge=0)
_add("n_samples", 64, "images per sample grid", gt=0)
_add("temperature", 1.0, "sampling temperature (scales the prior's standard deviation)", gt=0.0)
_add("sample_dir", "{output_dir}/samples", "where sample grids and figures go")
_add("plot_recon", False, "save data-vs-reconstruction figures each sample epoch")
# --- files ----------------------------------------------------------------------------------------
_group = "files"
_add("output_dir", "./runs/{name}", "the run folder: config, metrics, checkpoints, samples, "
     "TensorBoard; a new run never reuses a folder that holds files")
_add("checkpoint_path", "{output_dir}/best_checkpoint.tar", "the best-validation model")
_add("last_checkpoint_path", "{output_dir}/last_checkpoint.tar", "the latest training state, "
     "for --resume")
_add("resume", "", "checkpoint to resume training from (empty = a new run)")
# --- logging --------------------------------------------------------------------------------------
_group = "logging"
_add("log_interval", 100, "log the training loss every N steps", gt=0)
_add("verbose", False, "also log per-layer log-determinants")
_add("log_timing", False, "log mean/std time per batch and per sample")
_add("progress", True, "tqdm progress bars")
_add("tensorboard", True, "write TensorBoard scalars and sample grids (if tensorboard is "
     "installed: pip install 'inv_conv[tb]')")
_add("wandb", False, "log to Weights & Biases (imported only when true)")
_add("wandb_project", "inv_flow", "wandb project")
_add("wandb_entity", "", "wandb entity (team or user); empty = your default")
# --- model (read by build_model) --------------------------------------------------------------------
_group = "model"
_M = {"model": True}
_add("model", "glow", "glow (multi-scale, coupling), cnn (Inverse-Flow CNN) or fc (dense)",
     choices=("glow", "cnn", "fc"), **_M)
_add("dense_reference", False, "inverse_flow / finc_flow: run the masked convolutions through "
     "inv_conv's dense reference implementation (pure PyTorch, plain autograd; small images "
     "only) instead of its fast exact ops, to compare the two", **_M)
_add("num_blocks", 2, "glow: levels (squeeze + steps [+ split]); cnn: blocks", gt=0, **_M)
_add("block_size", 4, "steps of flow per block", gt=0, **_M)
_add("num_layers", 4, "fc only: dense layers", gt=0, **_M)
_add("kernel_size", 3, "k of the invertible k x k masked convolutions", gt=0, **_M)
_add("family", "inverse_flow", "the invertible convolution of every step of glow and cnn: "
     "inverse_flow (inverse of a masked k x k conv to train, the conv to sample), finc_flow (the "
     "masked conv to train, its inverse to sample), glow (1x1 conv) or snf (self-normalizing "
     "k x k conv); the fc model has none (keep the default)",
     choices=("inverse_flow", "finc_flow", "glow", "snf"), **_M)
_add("masked_conv", "unit", "inverse_flow, and finc_flow with finc_unit=unit: unit (four masked "
     "convolutions TL, TR, BL, BR per step) or single (one per step, orders cycling)",
     choices=("unit", "single"), **_M)
_add("finc_unit", "grouped", "finc_flow: grouped (FInC Flow's unit: one masked conv per channel "
     "group, + 1x1 mixing) or unit (masked_conv's layout, run the FInC way)",
     choices=("grouped", "unit"), **_M)
_add("mix_1x1", False, "inverse_flow, and finc_flow with finc_unit=unit: follow each step's "
     "masked convolution(s) with Glow's 1x1 convolution (LU), which mixes all channels", **_M)
_add("masked_init_std", 0.01, "inverse_flow, and finc_flow with finc_unit=unit: standard deviation "
     "of the masked k x k kernels' random initial weights (0: exactly the identity; the anchor "
     "tap's diagonal is fixed to 1 by the mask)", ge=0.0, **_M)
_add("coupling_hidden", 512, "hidden channels of the coupling networks (glow)", gt=0, **_M)
_add("activation", "none", "invertible pointwise activation after each step (None = none)",
     choices=("none", "SLR", "LLR", "Spline", "SELU"), **_M)
_add("actnorm", True, "ActNorm layers (data-dependent init on the first batch)", **_M)
_add("actnorm_position", "before", "where each step's ActNorm goes: before its invertible "
     "convolution(s), as in Glow, or after them", choices=("before", "after"), **_M)
_add("split_prior", True, "glow: factor out half the channels after each level but the last", **_M)
_add("num_levels", 256, "pixel levels of the data (raw values 0..num_levels-1); every loader serves "
     "256, digits also 17", ge=2, **_M)
_add("preprocess", "logit", "after dequantization and /num_levels: logit or center (-0.5)",
     choices=("logit", "center"), **_M)
_add("logit_alpha", 0.05, "logit preprocessing: logit(alpha + (1 - 2 alpha) x)", ge=0.0, lt=0.5,
     **_M)
_add("spline_bins", 10, "activation=Spline: number of bins", gt=0, **_M)
_add("spline_tail_bound", 10.0, "activation=Spline: the identity beyond +-this", gt=0.0, **_M)
_add("slr_alpha", 0.3, "activation=SLR: slope of the negative side", gt=0.0, lt=1.0, **_M)
_add("learn_base", False, "learnable mean/log-std of the Gaussian base", **_M)
_add("self_normalized_grad", True, "snf: train W with the self-normalized gradient (true) or "
     "the exact one through the dense log-determinant (false; small images)", **_M)
_add("recon_loss_weight", 1.0, "snf: initial weight of the reconstruction loss", ge=0.0, **_M)
_add("recon_loss_lr", 0.0, "snf: step of the adaptive reconstruction weight (0 = fixed)", ge=0.0,
     **_M)
_add("sym_recon_grad", False, "snf: also train W with the symmetric reconstruction loss", **_M)
_add("sample_true_inv", False, "snf: sample with the exact inverse (dense solve), not R", **_M)
_add("snf_max_dense_dims", 4096, "snf: largest C*H*W for the exact (dense) log-determinant", gt=0,
     **_M)
del _M

#: Earlier names of model options, still accepted wherever a config is read (a config file,
#: ``--set``, ``build_model``, a saved run's checkpoint or export) and rewritten to the options
#: above, silently, by :func:`inv_flow.config.apply_aliases` (the one place that maps them).
#: ``modified_grad`` is the original framework's key; ``inv_conv``, ``direction`` and
#: ``family="auto"`` are what earlier versions of inv_flow wrote into every saved config.
ALIASES: dict[str, str] = {
    "modified_grad": "true = dense_reference=false and self_normalized_grad=true; false = "
                     "dense_reference=true and self_normalized_grad=false",
    "inv_conv": "unit | single = masked_conv; conv1x1 = family=glow (where no family is given)",
    "direction": "inverse = family=inverse_flow; conv = family=finc_flow with finc_unit=unit "
                 "(where no family is given; next to a family it is ignored)",
    "family=auto": "the family that inv_conv and direction give (inverse_flow without them)",
}

#: key -> default, for every option.
DEFAULTS: dict[str, Any] = {key: option.default for key, option in OPTIONS.items()}
#: The keys build_model reads.
MODEL_KEYS: tuple[str, ...] = tuple(key for key, option in OPTIONS.items() if option.model)


class ConfigError(ValueError):
    """A configuration that cannot run: unknown key, bad value, unknown preset, bad shape."""


def check_options(config: Mapping[str, Any], keys: Iterable[str] | None = None) -> None:
    """The range and choice rules of :data:`OPTIONS` for ``keys`` (default: every key of
    ``config`` that the table knows); raises :class:`ConfigError` naming the key, the rule and
    the value given.  Values must already have their option's type (see ``config.coerce_value``).
    """
    for key in config if keys is None else keys:
        option = OPTIONS.get(key)
        if option is None or key not in config:
            continue
        value = config[key]
        if key == "activation" and value is None:
            continue  # None = no activation (presets and the original scripts use it)
        if option.choices is not None:
            if value not in option.choices:
                raise ConfigError(f"{key} must be one of {', '.join(map(str, option.choices))}; "
                                  f"got {value!r}")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number; got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        ok = ((option.ge is None or value >= option.ge) and (option.gt is None or value > option.gt)
              and (option.lt is None or value < option.lt))
        if not ok:
            raise ConfigError(f"{key} must be {option.rule()}; got {value!r}")


def describe_options() -> str:
    """Every option, grouped: ``key = default  meaning [allowed values]`` (``inv-flow options``)."""
    width = max(len(f"{key} = {option.default!r}") for key, option in OPTIONS.items())
    width = min(width, 44)
    lines: list[str] = []
    group = None
    for key, option in OPTIONS.items():
        if option.group != group:
            group = option.group
            lines.append(f"{'' if not lines else chr(10)}[{group}]")
        rule = option.rule()
        head = f"{key} = {option.default!r}"
        text = option.help + (f" [{rule}]" if rule else "")
        lines.append(f"{head:<{width}}  {text}" if len(head) <= width
                     else f"{head}\n{'':<{width}}  {text}")
    lines.append("\n[earlier names, still accepted]")
    lines.extend(f"{name:<{width}}  {meaning}" for name, meaning in ALIASES.items())
    return "\n".join(lines)
