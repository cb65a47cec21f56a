"""One training loop for every model family (anything with ``loss(x, *, generator)``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..device import autocast, compile_networks, grad_scaler
from ._feed import Batches, NonFiniteLossError, Pending, Window
from ._loop import HeldOut, JsonlLogger, check_inputs, deferred_sigint, loss_seed
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, lr_factor
from .distributed import DistInfo, LossModule, agree, batch_indices, setup, teardown
from .ema import EMA
from .evaluate import default_evaluate

__all__ = ["NonFiniteLossError", "TrainResult", "train"]

Evaluate = Callable[..., dict[str, float]]
"""``evaluate(model, eval_data)``, or ``evaluate(model, eval_data, eval_labels)`` when the
trainer has held-out labels; the keywords ``fast`` (a periodic evaluation) and ``progress``
are passed when it takes them."""


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns: the last step reached, the loss of every step run
    by this call (mean over processes), the last evaluation and the last checkpoint."""

    step: int
    losses: list[float]
    eval: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


def train(
    model: nn.Module,
    data: Tensor,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    eval_data: Tensor | None = None,
    evaluate: Evaluate | None = None,
    resume: bool = False,
    extra_state: dict[str, Any] | None = None,
    progress: bool = True,
    labels: Tensor | None = None,
    eval_labels: Tensor | None = None,
    transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` on the rows of ``data`` by minimising ``model.loss``.

    Each step draws a mini-batch (a seeded shuffle per epoch), calls
    ``model.loss(x, generator=g)``, clips the gradient norm, takes an Adam/AdamW step at
    the scheduled learning rate (:func:`~probpath.train.config.lr_factor`) and updates the
    EMA weights. Every ``log_every`` steps a record goes to ``run_dir/metrics.jsonl``.
    ``evaluate(model, eval_data)`` (default: :func:`~.evaluate.default_evaluate`, the
    held-out NLL) runs on the EMA weights at the end on all rows, and every ``eval_every``
    steps on a fixed subsample of ``eval_rows`` rows, with ``fast=True`` where it takes
    that keyword and skipped when periodic evaluations would take more than
    ``eval_budget`` of the training time. Every ``checkpoint_every`` steps (and at the
    end) a checkpoint goes to ``run_dir/checkpoints`` (see :mod:`.checkpoint`), holding
    also ``extra_state`` (JSON, e.g. the data standardisation and class names).

    ``labels`` (integer, one per row of ``data``) make the run conditional: each batch's
    labels go along as ``model.loss(x, y=y, generator=g)`` (a conditional network, which
    drops them itself with probability ``p_uncond``, or a classifier); ``eval_labels``
    go to ``evaluate(model, eval_data, eval_labels)``.

    ``transform(batch, generator)`` maps each batch to the model's space after the step's
    generator is seeded and before the loss draws from it: e.g. fresh dequantization noise
    for integer ``data`` (then kept on its integer dtype in memory), which a resumed run
    draws again exactly.

    ``resume=True`` continues from the newest checkpoint: a resumed run reproduces the
    uninterrupted run's losses exactly (same device, single process). A NaN/inf loss or
    gradient raises :class:`NonFiniteLossError` and leaves the last checkpoint as it was;
    Ctrl-C finishes the current step, writes a checkpoint and raises ``KeyboardInterrupt``.

    Under ``torchrun`` the model is wrapped in DistributedDataParallel, each process takes
    ``batch_size / world_size`` rows of every batch, and only rank 0 logs and checkpoints;
    held-out evaluations are sharded across the ranks (:class:`._loop.HeldOut`).

    Training runs on the model's device, in ``config.precision``, with ``config.compile``
    (docs/gpu.md). A step reads nothing back to the host: its numbers are read when the
    trainer logs, evaluates or checkpoints, where a non-finite step stops training.

    Example:
        >>> import tempfile
        >>> class Gauss(torch.nn.Module):  # learns the mean of unit-variance data
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.mu = torch.nn.Parameter(torch.zeros(2))
        ...     def loss(self, x, *, generator=None):
        ...         return 0.5 * (x - self.mu).pow(2).sum(-1).mean(), {}
        ...     def log_prob(self, x):
        ...         return -0.5 * (x - self.mu).pow(2).sum(-1) - math.log(2 * math.pi)
        >>> data = torch.randn(512, 2, generator=torch.Generator().manual_seed(0)) + 3
        >>> cfg = TrainConfig(steps=300, batch_size=64, lr=0.05, ema_decay=0.0)
        >>> out = train(Gauss(), data, cfg, tempfile.mkdtemp(), progress=False)
        >>> out.step, out.losses[-1] < 1.5 < out.losses[0]
        (300, True)
    """
    check_inputs(data, labels, eval_data, eval_labels, integer=transform is not None)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    info = setup(params[0].device)
    eval_args: tuple[Tensor, ...] = () if eval_data is None else (eval_data,)
    eval_args += () if eval_labels is None else (eval_labels,)
    show = progress and info.is_main
    held_out = HeldOut(evaluate or default_evaluate, eval_args, config, show, info)
    try:
        loop = _Loop(model, params, config, Path(run_dir), info, resume, extra_state, held_out)
        loop.transform = transform
        result = loop.run(data, labels, progress=progress)
        if info.distributed:  # rank 0 may still write its checkpoint: leave together
            dist.barrier()
        return result
    finally:
        teardown(info)


class _Loop:
    """One call of :func:`train`, read top-down: the set-up (``__init__``: fresh, or
    resumed by :meth:`_restore`), then :meth:`run`, which repeats :meth:`step`,
    :meth:`flush`, :meth:`evaluate` and :meth:`checkpoint` and ends with :meth:`finish`."""

    def __init__(
        self,
        model: nn.Module,
        params: list[nn.Parameter],
        config: TrainConfig,
        run_dir: Path,
        info: DistInfo,
        resume: bool,
        extra_state: dict[str, Any] | None,
        held_out: HeldOut,
    ) -> None:
        self.model, self.params, self.config, self.run_dir, self.info = (
            model, params, config, run_dir, info,
        )  # fmt: skip
        self.device = info.device or params[0].device
        self.dtype = params[0].dtype
        self.ckpt_dir = run_dir / "checkpoints"
        model.to(self.device)
        if config.compile is not None:
            compile_networks(model, config.compile)
        self.scaler = grad_scaler(self.device, config.precision)
        opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        # fused=True: one kernel for the whole update (6-10% of a flow-matching step here).
        self.optimizer = opt_cls(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        self.ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
        self.extra = dict(extra_state or {})
        self.start = 0
        self.last_ckpt: Path | None = None
        if resume:
            self._restore()
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(config.seed + info.rank)
        if info.distributed and info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.logger = JsonlLogger(run_dir, info.is_main, self.start if resume else None)
        adapter = LossModule(model)
        self.loss_fn: nn.Module = adapter
        if info.distributed:
            ids = [self.device] if self.device.type == "cuda" else None
            self.loss_fn = nn.parallel.DistributedDataParallel(adapter, device_ids=ids)
        self.gen = torch.Generator(device=self.device)
        self.held_out = held_out
        self.clip = config.grad_clip if config.grad_clip > 0 else math.inf
        self.step_done = self.start
        self.pending = Pending()
        self.losses: list[float] = []
        self.window = Window(scaled=self.scaler.is_enabled())
        self.last_eval: dict[str, float] = {}
        self.transform: Callable[[Tensor, torch.Generator], Tensor] | None = None
        self.bar: Any = None

    def _restore(self) -> None:
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            raise FileNotFoundError(f"cannot resume: no checkpoint in {self.ckpt_dir}")
        ck = load_checkpoint(path)
        self.config.check_resumes(ck.meta.get("train_config", {}), self.run_dir)
        self.model.load_state_dict(ck.model)
        if ck.optimizer is not None:
            self.optimizer.load_state_dict(ck.optimizer)
        if self.ema is not None and ck.ema is not None:
            self.ema.load_state_dict(ck.ema, ck.meta.get("ema_num_updates", 0))
        if self.info.is_main:
            torch.set_rng_state(torch.tensor(ck.meta["rng"]["torch_cpu"], dtype=torch.uint8))
        else:
            torch.manual_seed(loss_seed(self.config.seed, self.info.rank, ck.step) + 1)
        self.extra = {**ck.meta.get("extra", {}), **self.extra}
        self.start, self.last_ckpt = ck.step, path

    def run(self, data: Tensor, labels: Tensor | None, *, progress: bool) -> TrainResult:
        """Step until ``config.steps``, logging, evaluating and checkpointing on schedule;
        then the final evaluation and checkpoint. Ctrl-C checkpoints the last whole step."""
        config, info = self.config, self.info
        batches = batch_indices(
            len(data), config.batch_size, info, seed=config.seed, start_step=self.start
        )
        dtype = data.dtype if self.transform is not None else self.dtype  # levels stay integers
        feed = Batches(data, labels, self.device, dtype)
        self.bar = tqdm(
            total=config.steps,
            initial=self.start,
            disable=not (progress and info.is_main),
            dynamic_ncols=True,
            desc="train",
        )
        self.t0, self.aside = time.perf_counter(), 0.0
        rng = torch.get_rng_state()
        try:
            with deferred_sigint() as interrupted:
                while self.step_done < config.steps:
                    if interrupted["set"]:
                        raise KeyboardInterrupt
                    self.step(self.step_done + 1, *feed(next(batches)))
                    rng = torch.get_rng_state()  # the state a resumed run must start from
                    self.bar.update(1)
                    k = self.step_done
                    evaluate = self._periodic_eval_due(k)
                    save = k % config.checkpoint_every == 0
                    if evaluate or save or k % config.log_every == 0 or k == config.steps:
                        self.flush()
                    if evaluate:
                        self.evaluate(k, final=False)
                    if save:
                        self.checkpoint(k, torch.get_rng_state())
                self.finish()
        except KeyboardInterrupt:
            self.bar.close()
            self.flush()
            done = self.step_done
            path = self.checkpoint(done, rng) if done > self.start else self.last_ckpt
            if info.is_main:
                print(f"probpath: interrupted after step {done}; checkpoint: {path}")
            raise
        finally:
            self.bar.close()
        return TrainResult(self.step_done, self.losses, self.last_eval, self.last_ckpt)

    def step(self, k: int, x: Tensor, y: Tensor | None) -> None:
        """Optimiser step ``k`` on the batch ``(x, y)`` (on the device): the loss in the run's
        precision, the (scaled) backward pass, clipping, the update and the EMA; the loss,
        gradient norm and logs stay on the device until :meth:`flush`."""
        config, info = self.config, self.info
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(k, config)
        self.gen.manual_seed(loss_seed(config.seed, info.rank, k))
        if self.transform is not None:
            x = self.transform(x, self.gen).to(self.dtype)
        self.optimizer.zero_grad(set_to_none=True)
        try:
            with autocast(self.device, config.precision):
                loss, logs = self.loss_fn(x, self.gen, y)
            self.scaler.scale(loss).backward()
        except RuntimeError as e:
            if config.compile is None:
                raise
            raise ValueError(
                f"compile: torch.compile cannot train this model ({str(e).splitlines()[0]}); "
                "a loss that differentiates the network with respect to its input (cnf, ebm) "
                "trains eagerly: drop --compile"
            ) from e
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.scaler.step(self.optimizer)  # skips a step whose fp16 gradients overflowed
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        self.pending.add(k, loss, grad_norm, logs)
        self.step_done = k

    def flush(self) -> None:
        """Read the steps since the last flush from the device (one transfer), stop at a
        non-finite one, and add them to the losses, the progress bar and the log window;
        at a log step, write the window's means to ``metrics.jsonl``."""
        k, config = self.step_done, self.config
        for r in self.pending.read(self.info):
            if not (r.finite or self.window.skipped(r)):
                raise r.non_finite(self.last_ckpt)
            self.losses.append(r.loss)
            self.window.add(r)
            self.bar.set_postfix(r.postfix(), refresh=False)
        if k % config.log_every == 0 or k == config.steps:
            means, elapsed = self.window.means(), time.perf_counter() - self.t0
            if means:
                self.logger.write(
                    {
                        "step": k,
                        "split": "train",
                        **means,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "it_s": (k - self.start) / max(elapsed, 1e-9),
                        "time": elapsed,
                    }
                )

    def _periodic_eval_due(self, k: int) -> bool:
        """Every ``eval_every`` steps before the last, within the time budget (rank 0's
        decision on every rank)."""
        every, steps = self.config.eval_every, self.config.steps
        if not (every and k % every == 0 and k < steps):
            return False
        train_seconds = time.perf_counter() - self.t0 - self.aside
        return agree(self.held_out.due(train_seconds), self.info)

    def evaluate(self, k: int, *, final: bool) -> None:
        """The held-out evaluation on the EMA weights, in the run's precision, sharded across
        ranks: the final one exact on all rows, a periodic one on the fixed subsample (see
        :class:`._loop.HeldOut`)."""
        if not self.held_out.full:
            return
        t0 = time.perf_counter()
        swap = self.ema.swapped(self.model) if self.ema else nullcontext()
        with swap, autocast(self.device, self.config.precision):
            out, about = self.held_out(self.model, final=final)
        record = {f"eval_{key}": v for key, v in out.items()}
        self.logger.write({"step": k, "split": "eval", **about, **record})
        self.last_eval = out
        self.aside += time.perf_counter() - t0

    def checkpoint(self, k: int, rng: Tensor) -> Path | None:
        """A checkpoint of step ``k`` with the RNG state ``rng`` (rank 0)."""
        if not self.info.is_main:
            return None
        t0, config, ema = time.perf_counter(), self.config, self.ema
        meta = {
            "train_config": config.to_dict(),
            "rng": {"torch_cpu": rng.tolist(), "loss_generator": "seeded per step"},
            "data_order": {"seed": config.seed, "world_size": self.info.world_size},
            "device": str(self.device),
            "ema_num_updates": ema.num_updates if ema else 0,
            "extra": self.extra,
        }
        self.last_ckpt = save_checkpoint(
            self.ckpt_dir,
            k,
            model=self.model.state_dict(),
            ema=ema.state_dict() if ema else None,
            optimizer=self.optimizer.state_dict(),
            meta=meta,
            keep=config.keep_checkpoints,
        )
        self.aside += time.perf_counter() - t0
        return self.last_ckpt

    def finish(self) -> None:
        """The final evaluation, and the final checkpoint unless the last step wrote it."""
        self.flush()
        k, config = self.step_done, self.config
        if k > self.start:
            self.evaluate(k, final=True)
        if self.last_ckpt is None or (k > self.start and k % config.checkpoint_every):
            self.checkpoint(k, torch.get_rng_state())
