"""The training loop of ``inv_flow``: :class:`Experiment` trains, evaluates, samples, saves and
resumes a flow described by a config dict (see :mod:`inv_flow.config`).

Every check that can fail (config, image shape vs model, dataset present) runs in the
constructor, before any training step.  Checkpoints are written atomically; a NaN/Inf loss
raises :class:`TrainingDiverged` before the optimizer touches the weights, and no checkpoint is
written after it, so the last good checkpoints stay as they were.

Distributed data-parallel training: run any training command under torchrun
(``torchrun --nproc_per_node=N -m inv_flow train ...``).  The constructor then joins the process
group (:func:`inv_flow.distributed.setup`: one device per rank, NCCL on GPUs, gloo on the CPU),
``batch_size`` is the global batch split evenly over the ranks, the data are sharded by
:func:`inv_flow.data.make_sampler`, ActNorm initialises from statistics reduced over all ranks,
the model is wrapped in ``DistributedDataParallel`` for training steps, evaluation sums are
all-reduced, and only rank 0 writes files.  See :mod:`inv_flow.distributed`.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.data import Subset

from inv_flow import distributed as distributed_utils
from inv_flow import resume as resume_rules
from inv_flow.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_save,
    capture_rng_state,
    restore_rng_state,
    seed_everything,
)
from inv_flow.building import ModelBuilder, build_checked_model, select_device
from inv_flow.compiled import CompiledLoss
from inv_flow.config import ConfigError, checked_config
from inv_flow.data import (DataSplits, check_image_shape, check_num_levels, load_datasets,
                           make_loader, set_loader_epoch)
from inv_flow.flows import bits_per_dim
from inv_flow.logging_utils import RunLogger, Timer, is_main_process
from inv_flow.plots import save_image_grid, save_reconstruction_figure
from inv_flow.runs import claim_run_dir, describe_run
from inv_flow.schedules import build_scheduler, restore_scheduler



class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN/Inf; training stopped before applying that step."""


def _initialize_actnorm(model: nn.Module, batch: torch.Tensor, all_reduce=None) -> None:
    """Data-dependent ActNorm init on one batch (no-op for models without ActNorm); with
    ``all_reduce`` (distributed), from the statistics of every rank's batch together."""
    from inv_flow.layers.actnorm import initialize_actnorm  # noqa: PLC0415

    initialize_actnorm(model, batch, all_reduce=all_reduce)


def _cuda_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Experiment:
    """One training run.

    ``config`` is a full config (from :func:`inv_flow.config.resolve_config`).  ``model_builder``
    and ``datasets`` replace ``build_model`` and the dataset loader (tests, custom data);
    ``load_data=False`` skips the data (sampling from a checkpoint needs none).

    Typical use::

        exp = Experiment(resolve_config("digits", {"epochs": 5}))
        exp.train()
        print(exp.evaluate("val"))
    """

    def __init__(self, config: Mapping[str, Any], *, model_builder: ModelBuilder | None = None,
                 datasets: DataSplits | None = None, load_data: bool = True,
                 main_process: bool | None = None):
        self.config = checked_config(config)
        seed_everything(self.config["seed"])
        # Under torchrun: join the process group and take this rank's device (None otherwise).
        self.dist = distributed_utils.setup(self.config)
        try:
            self._build(model_builder, datasets, load_data, main_process)
        except BaseException:
            self.close(failed=True)
            raise

    def _build(self, model_builder: ModelBuilder | None, datasets: DataSplits | None,
               load_data: bool, main_process: bool | None) -> None:
        self._logger: RunLogger | None = None
        self._ddp_model: nn.Module | None = None
        self.rank = self.dist.rank if self.dist is not None else 0
        self.world_size = self.dist.world_size if self.dist is not None else 1
        self.is_main = is_main_process() if main_process is None else main_process
        self.device = self.dist.device if self.dist is not None else select_device(self.config["device"])
        if self.config["batch_size"] % self.world_size:
            raise ConfigError(
                f"batch_size={self.config['batch_size']} is the global batch and must be "
                f"divisible by the number of processes ({self.world_size})")
        self.local_batch_size = self.config["batch_size"] // self.world_size

        # Cheap checks first: optional packages, shape vs dataset, shape vs model, files on disk.
        if self.config["wandb"] and importlib.util.find_spec("wandb") is None:
            raise ImportError("wandb=true but wandb is not installed; `pip install wandb` or "
                              "leave wandb=false")
        if datasets is not None:
            self.image_shape = tuple(int(s) for s in datasets.image_shape)
        else:
            self.image_shape = check_image_shape(self.config["dataset"], self.config["image_shape"],
                                                 self.config.get("pad_to") or ())
            check_num_levels(self.config["dataset"], int(self.config.get("num_levels", 256)))
        self.num_dims = math.prod(self.image_shape)
        self.model = build_checked_model(self.config, self.image_shape, model_builder).to(self.device)
        if self.rank > 0:
            # Same model on every rank (built from `seed`); from here on each rank draws its own
            # dequantization noise.  Rank 0 keeps `seed`, so a world of one is a plain run.
            seed_everything(distributed_utils.rank_seed(self.config["seed"], self.rank))
        self._fault_step = distributed_utils.injected_fault(self.dist)
        self._data = datasets
        if load_data and self._data is None:
            self._data = load_datasets(self.config)

        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config["lr"])
        # Compiled at the first step, after ActNorm's data-dependent init.
        self._forward_loss = CompiledLoss(self._loss, self.config.get("compile", "off"), self.device)
        self.steps_per_epoch: int | None = None
        self._train_loader = None
        self._scheduler = None if self._data is None else \
            build_scheduler(self.optimizer, self.config, len(self.train_loader))  # else lazily
        self.epoch = 0          # completed epochs
        self.step = 0           # completed optimizer steps
        self.best_val_bpd, self._run_claimed = math.inf, False  # run folder: see train()

    # ----------------------------------------------------------------------------- plumbing
    @property
    def data(self) -> DataSplits:
        """The datasets (loaded on first use when the constructor skipped them)."""
        if self._data is None:
            self._data = load_datasets(self.config)
        return self._data

    @property
    def logger(self) -> RunLogger:
        if self._logger is None:
            self._logger = RunLogger(self.config, enabled=self.is_main)
        return self._logger

    @property
    def train_loader(self):
        if self._train_loader is None:
            train = self.data.train
            batch_size = self.config["batch_size"]
            self._train_loader = make_loader(
                train, self.local_batch_size, shuffle=True, seed=self.config["seed"],
                num_workers=self.config["num_workers"],
                # Drop a ragged last batch (noisy gradient) unless the set is smaller than a batch.
                drop_last=len(train) > batch_size, rank=self.rank, world_size=self.world_size)
            self.steps_per_epoch = len(self._train_loader)
        return self._train_loader

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        """Per-step LR schedule (:mod:`inv_flow.schedules`); needs the data's steps per epoch."""
        if self._scheduler is None:
            self._scheduler = build_scheduler(self.optimizer, self.config, len(self.train_loader))
        return self._scheduler

    def _eval_loader(self, dataset):
        return make_loader(dataset, self.local_batch_size, shuffle=False,
                           seed=self.config["seed"], num_workers=self.config["num_workers"],
                           rank=self.rank, world_size=self.world_size)

    @property
    def distributed(self) -> bool:
        """True when running in a torch.distributed process group (also a world of one)."""
        return self.dist is not None and self.dist.enabled

    def _training_model(self) -> nn.Module:
        """The model that training steps call: ``DistributedDataParallel(self.model)`` in a
        distributed run (created at the first step, after ActNorm init and any resume, which
        broadcasts rank 0's weights), else ``self.model``.  Evaluation, sampling and checkpoints
        use ``self.model`` directly (no collectives, no ``module.`` prefix)."""
        if not self.distributed:
            return self.model
        if self._ddp_model is None:
            from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

            self._ddp_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(self.config.get("ddp_find_unused_parameters", False)))
        return self._ddp_model

    @property
    def last_checkpoint_path(self) -> Path:
        return Path(self.config["last_checkpoint_path"])

    @property
    def best_checkpoint_path(self) -> Path:
        return Path(self.config["checkpoint_path"])

    # ----------------------------------------------------------------------------- training
    def train(self, until_epoch: int | None = None) -> dict[str, Any]:
        """Train from the current epoch up to ``config["epochs"]`` (or ``until_epoch``, to stop
        early and resume later).  Returns the last per-epoch record.

        After each epoch: evaluation every ``eval_epochs`` (and after the final epoch), samples
        every ``sample_epochs``, the best-validation model to ``checkpoint_path`` and the full
        training state to ``last_checkpoint_path``.
        """
        total_epochs = self.config["epochs"]
        stop = total_epochs if until_epoch is None else min(until_epoch, total_epochs)
        if self.step == 0 and not self._run_claimed:  # a new run: its own folder (runs.py)
            self.config, self._run_claimed = claim_run_dir(self.config, self), True
        logger = self.logger
        logger.message(describe_run(self.config))  # also when resuming
        loader = self.train_loader
        if self.step == 0:
            set_loader_epoch(loader, 0)
            first_batch = next(iter(loader)).to(self.device)
            # Distributed: each rank holds its share of the first global batch, and ActNorm
            # initialises from the statistics summed over all ranks.
            _initialize_actnorm(self.model, first_batch, all_reduce=functools.partial(
                distributed_utils.all_reduce_sum, context=self.dist) if self.distributed else None)
            where = f"device {self.device}"
            if self.distributed:
                where = (f"{self.world_size} process(es) ({self.dist.backend}, rank 0 on "
                         f"{self.device}), {self.local_batch_size} images per process and step")
            logger.message(f"{self.config['name']}: {sum(p.numel() for p in self.model.parameters()):,} "
                           f"parameters, {len(self.data.train)} training images of shape "
                           f"{self.image_shape}, {where}")
        record: dict[str, Any] = {}
        for epoch in logger.progress(range(self.epoch, stop), desc="epochs", initial=self.epoch,
                                     total=total_epochs):
            record = self._run_epoch(epoch, is_final=epoch + 1 == total_epochs)
        return record

    def _run_epoch(self, epoch: int, is_final: bool) -> dict[str, Any]:
        started = time.perf_counter()
        train_stats = self.train_epoch(epoch)
        completed = epoch + 1
        record: dict[str, Any] = {"event": "epoch", "epoch": completed, "step": self.step,
                                  **train_stats, "lr": self.optimizer.param_groups[0]["lr"]}

        eval_every = self.config["eval_epochs"]
        improved = False
        if (eval_every > 0 and completed % eval_every == 0) or is_final:
            record.update(self.evaluate("val"))
            if self.config["eval_train"]:
                record.update(self.evaluate("train"))
            improved = record["val_bpd"] < self.best_val_bpd
            if improved:
                self.best_val_bpd = record["val_bpd"]
            record["best_val_bpd"] = self.best_val_bpd

        sample_every = self.config["sample_epochs"]
        if self.is_main and sample_every > 0 and (completed % sample_every == 0 or is_final):
            path = self.save_samples(Path(self.config["sample_dir"]) / f"samples_epoch{completed:04d}.png")
            self.logger.log_image("samples", path, step=self.step)
            if self.config["plot_recon"]:
                self.save_reconstructions(
                    Path(self.config["sample_dir"]) / f"reconstruction_epoch{completed:04d}.png")

        record["epoch_seconds"] = time.perf_counter() - started
        self.epoch = completed
        self.logger.log(record)
        # Saved last, so the RNG state stored is the one the next epoch starts from.  `improved`
        # comes from all-reduced metrics, so every rank takes the same branch (save is collective).
        if improved:
            self.save(self.best_checkpoint_path)
        self.save(self.last_checkpoint_path)
        return record

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; returns mean train bits/dim (and timing if asked)."""
        self.model.train()
        loader = self.train_loader
        set_loader_epoch(loader, epoch)
        batch_timer, sample_timer = Timer(), Timer()
        total_log_prob, total_count = 0.0, 0
        bar = self.logger.progress(loader, desc=f"epoch {epoch + 1}", leave=False)
        for batch_index, batch in enumerate(bar):
            batch = batch.to(self.device, non_blocking=True)
            started = time.perf_counter()
            log_prob = self.train_step(batch, epoch)
            if self.config["log_timing"]:
                _cuda_sync(self.device)
                elapsed = time.perf_counter() - started
                batch_timer.add(elapsed)
                sample_timer.add(elapsed / batch.shape[0])
            batch_sum = float(log_prob.detach().double().sum())
            total_log_prob += batch_sum
            total_count += batch.shape[0]
            batch_bpd = bits_per_dim(batch_sum / batch.shape[0], self.num_dims)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(bpd=f"{batch_bpd:.3f}")
            if self.is_main and self.step % self.config["log_interval"] == 0:
                # Distributed: rank 0's share of the batch (the epoch records are global).
                step_record = {"event": "train_step", "epoch": epoch + (batch_index + 1) / len(loader),
                               "step": self.step, "train_bpd": batch_bpd,
                               "lr": self.optimizer.param_groups[0]["lr"]}
                if self.config["verbose"]:
                    step_record.update(self.layer_logdets(batch))
                self.logger.log(step_record)
        if self.distributed:
            totals = distributed_utils.all_reduce_sum(
                torch.tensor([total_log_prob, float(total_count)], dtype=torch.float64), self.dist)
            total_log_prob, total_count = float(totals[0]), int(totals[1])
        stats = {"train_bpd": bits_per_dim(total_log_prob / max(total_count, 1), self.num_dims)}
        if self.config["log_timing"]:
            stats["time_per_batch_mean"], stats["time_per_batch_std"] = batch_timer.summary()
            stats["time_per_sample_mean"], stats["time_per_sample_std"] = sample_timer.summary()
        return stats

    def train_step(self, batch: torch.Tensor, epoch: int | None = None) -> torch.Tensor:
        """One optimizer step on ``batch``; returns the per-sample log-densities [B].

        Raises :class:`TrainingDiverged` (weights untouched) on a non-finite loss or gradient.
        Distributed: ``batch`` is this rank's share of the global batch; DDP averages the
        gradients over the ranks, and a non-finite loss on any rank stops every rank.
        """
        if self._fault_step is not None and self.step == self._fault_step:
            raise RuntimeError(f"injected fault ({distributed_utils.FAULT_ENV}) in rank {self.rank} "
                               f"at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        log_prob, loss = self._forward_loss(batch)
        # Families with extra training terms (snf reconstruction losses) expose them here;
        # the contract is one call per optimizer step, after the training forward.
        extra_loss = getattr(self.model, "extra_loss", None)
        if callable(extra_loss):
            loss = loss + extra_loss()
        if self.distributed:
            # Every rank votes before backward, so that all of them stop together (a NaN would
            # otherwise reach the others through the gradient all-reduce first).
            finite = bool(torch.isfinite(loss))
            if distributed_utils.all_reduce_any(not finite, self.dist):
                where = f" on rank {self.rank}" if not finite else " on another rank"
                self._diverged(f"the loss is {loss.item() if not finite else 'not finite'}{where}", epoch)
        loss.backward()
        max_norm = self.config["grad_clip_norm"]
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), max_norm if max_norm > 0 else math.inf)
        # One host synchronisation per step: checking the loss before backward would drain the
        # device's queue before backward is enqueued. Nothing is applied until both are finite.
        if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                self._diverged(f"the loss is {loss.item()}", epoch)
            self._diverged(f"the gradient norm is {grad_norm.item()}", epoch)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return log_prob

    @property
    def compile_mode(self) -> str:
        """The torch.compile mode the training loss runs under ("off": eager)."""
        return self._forward_loss.mode

    def _loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample log-densities [B], mean bits/dim): what ``compile`` compiles."""
        _, log_prob = self._training_model()(batch)
        return log_prob, bits_per_dim(log_prob, self.num_dims).mean()

    def _diverged(self, what: str, epoch: int | None) -> None:
        kept = [str(p) for p in (self.best_checkpoint_path, self.last_checkpoint_path) if p.is_file()]
        where = ("the last good checkpoints are untouched: " + ", ".join(kept)) if kept else \
            "no checkpoint had been written yet"
        message = (f"training diverged at epoch {None if epoch is None else epoch + 1}, step "
                   f"{self.step}: {what}. The step was not applied; {where}. Try a lower lr, a "
                   f"longer warmup_epochs or a smaller grad_clip_norm.")
        if self._logger is not None:
            self._logger.log({"event": "diverged", "epoch": epoch, "step": self.step,
                              "message": message}, echo=False)
        raise TrainingDiverged(message)

    def layer_logdets(self, batch: torch.Tensor) -> dict[str, float]:
        """Mean log-determinant (nats) of every layer on ``batch`` (for ``verbose`` logging)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                _, _, per_layer = self.model(batch, return_layer_logdets=True)
        finally:
            self.model.train(was_training)
        return {f"logdet/{name}": float(value.double().mean()) for name, value in per_layer.items()}

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Exact log-likelihood of ``split`` ("val", "test" or "train"), capped at
        ``max_eval_ex`` examples: ``{split}_bpd`` (bits/dim), ``{split}_log_likelihood`` (mean
        nats per image, density over [0, 256)^D) and ``{split}_examples``.

        The training split is reported as ``train_eval_*`` (eval mode, no updates).

        Distributed: a collective — every rank must call it.  Each rank evaluates every
        ``world_size``-th image of the (capped) split and the float64 sums of log-densities and
        the counts are all-reduced, so the result is the single-process value over the same
        images, on every rank.
        """
        datasets = {"val": self.data.val, "test": self.data.test, "train": self.data.train}
        if split not in datasets:
            raise ConfigError(f"split must be one of {sorted(datasets)}, got {split!r}")
        dataset = datasets[split]
        if dataset is None:
            raise ConfigError(f"the {self.data.name} dataset has no {split!r} split; use "
                              f"{' or '.join(s for s, d in datasets.items() if d is not None)}")
        limit = min(self.config["max_eval_ex"] or len(dataset), len(dataset))
        if limit < len(dataset):
            dataset = Subset(dataset, range(limit))  # the first `limit` images, as before
        was_training = self.model.training
        self.model.eval()
        total_log_prob = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        try:
            for batch in self._eval_loader(dataset):
                batch = batch.to(self.device, non_blocking=True)
                _, log_prob = self.model(batch)
                total_log_prob += log_prob.double().sum()
                count += batch.shape[0]
        finally:
            self.model.train(was_training)
        totals = torch.stack([total_log_prob.cpu(), torch.tensor(float(count), dtype=torch.float64)])
        if self.distributed:
            totals = distributed_utils.all_reduce_sum(totals, self.dist)
        total_log_prob, count = float(totals[0]), int(totals[1])
        mean_log_prob = total_log_prob / max(count, 1)
        prefix = "train_eval" if split == "train" else split
        return {f"{prefix}_bpd": bits_per_dim(mean_log_prob, self.num_dims),
                f"{prefix}_log_likelihood": mean_log_prob,
                f"{prefix}_examples": count}

    # ----------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, n: int | None = None, temperature: float | None = None) -> torch.Tensor:
        """``n`` samples (N, C, H, W) of pixel values from the model."""
        n = n or self.config["n_samples"]
        temperature = self.config["temperature"] if temperature is None else temperature
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model.sample(n, temperature=temperature).cpu()
        finally:
            self.model.train(was_training)

    def save_samples(self, path: str | Path, n: int | None = None,
                     temperature: float | None = None) -> Path:
        """Sample and write a PNG grid (main process only; other ranks do nothing); returns the
        path."""
        if self.is_main:
            save_image_grid(self.sample(n, temperature), path)
        return Path(path)

    @torch.no_grad()
    def save_reconstructions(self, path: str | Path, count: int = 8) -> Path:
        """PNG of validation images, their reconstructions and the amplified difference (main
        process only)."""
        if not self.is_main:
            return Path(path)
        dataset = self.data.val
        originals = torch.stack([dataset[i] for i in range(min(count, len(dataset)))])
        was_training = self.model.training
        self.model.eval()
        try:
            reconstructions = self.model.reconstruct(originals.to(self.device)).cpu()
        finally:
            self.model.train(was_training)
        save_reconstruction_figure(originals, reconstructions, path)
        return Path(path)

    # -------------------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, scheduler, counters and
        the global RNG states (data order is a function of (seed, epoch), see data.py).
        ``rng`` is this process's state; :meth:`save` adds ``rng_ranks`` (every rank's) and
        ``world_size`` in a distributed run."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config,
            "image_shape": self.image_shape,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best_val_bpd": self.best_val_bpd,
            "rng": capture_rng_state(),
        }

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint atomically (main process only).

        Distributed: a collective — every rank must call it; the RNG states of all ranks are
        gathered and stored as ``rng_ranks`` so that a resume with the same number of processes
        continues every rank's random stream exactly.  Only rank 0 writes.
        """
        path = Path(path)
        rng_ranks = None
        if self.distributed:
            rng_ranks = distributed_utils.all_gather_object(capture_rng_state(), self.dist)
        if self.is_main:
            payload = self.state()
            if rng_ranks is not None:
                payload["rng_ranks"] = rng_ranks
            payload["world_size"] = self.world_size
            atomic_save(payload, path)
        return path

    def load_state(self, payload: Mapping[str, Any], training_state: bool = True) -> None:
        """Restore weights and, with ``training_state``, optimizer, scheduler, counters, RNG."""
        self.model.load_state_dict(payload["model"])
        if not training_state:
            return
        self.optimizer.load_state_dict(payload["optimizer"])
        self.epoch = int(payload["epoch"])
        self.step = int(payload["step"])
        restore_scheduler(self.scheduler, payload["scheduler"], self.step)
        self.best_val_bpd = float(payload["best_val_bpd"])
        rng_ranks = payload.get("rng_ranks")
        if rng_ranks is not None and len(rng_ranks) == self.world_size:
            restore_rng_state(rng_ranks[self.rank])   # same number of processes: exact
        else:
            restore_rng_state(payload["rng"])
            if self.rank > 0:
                # Another number of processes: rank 0 continues the saved stream, the others
                # start fresh streams derived from (seed, step, rank).
                seed_everything(distributed_utils.rank_seed(self.config["seed"] + self.step,
                                                            self.rank))

    @classmethod
    def from_checkpoint(cls, path: str | Path, overrides: Mapping[str, Any] | None = None, *,
                        presets: Mapping[str, Mapping[str, Any]] | None = None,
                        model_builder: ModelBuilder | None = None,
                        datasets: DataSplits | None = None, load_data: bool = True,
                        training_state: bool = True) -> "Experiment":
        """Rebuild an experiment from a checkpoint (its saved config, then ``overrides``, e.g.
        ``{"epochs": 200}`` to train longer or ``{"data_root": ...}`` on another machine).

        With ``training_state`` (resuming), only :data:`inv_flow.resume.RESUMABLE_KEYS` may be
        overridden, and a new ``lr`` reaches the loaded optimizer and scheduler.  A file that
        does not fit is a one-line :class:`~inv_flow.checkpoint.CheckpointError` (see
        :mod:`inv_flow.resume`)."""
        return resume_rules.from_checkpoint(
            cls, path, overrides, presets=presets, training_state=training_state,
            model_builder=model_builder, datasets=datasets, load_data=load_data)

    def close(self, failed: bool = False) -> None:
        """Flush and close the loggers, and end the process group if this experiment created
        it (torchrun): after a barrier on the clean path, without waiting for the other ranks
        when ``failed`` (an exception is propagating)."""
        try:
            if getattr(self, "_logger", None) is not None:
                self._logger.close()
        finally:
            # The DDP wrapper holds the process group: dropped first, the group's last reference
            # goes with destroy_process_group, which then joins gloo's threads (not exit).
            self._ddp_model = None
            if getattr(self, "dist", None) is not None:
                self.dist.shutdown(failed=failed)

    def __enter__(self) -> "Experiment":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)
