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

from ._loop import HeldOut, JsonlLogger, check_inputs, deferred_sigint, loss_seed
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import RESUMABLE_CHANGES, TrainConfig, lr_factor
from .distributed import DistInfo, LossModule, batch_indices, setup, teardown
from .ema import EMA
from .evaluate import default_evaluate

__all__ = ["NonFiniteLossError", "TrainResult", "train"]

Evaluate = Callable[..., dict[str, float]]
"""``evaluate(model, eval_data)``, or ``evaluate(model, eval_data, eval_labels)`` when the
trainer has held-out labels; the keywords ``fast`` (a periodic evaluation) and ``progress``
are passed when it takes them."""


class NonFiniteLossError(RuntimeError):
    """The loss or its gradient became NaN or infinite; training stopped."""


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
    ``batch_size / world_size`` rows of every batch, and only rank 0 logs and checkpoints.

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
    held_out = HeldOut(evaluate or default_evaluate, eval_args, config, progress and info.is_main)
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
    :meth:`record`, :meth:`evaluate` and :meth:`checkpoint` and ends with :meth:`finish`."""

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
        self.losses: list[float] = []
        self.window: dict[str, list[float]] = {}
        self.last_eval: dict[str, float] = {}
        self.transform: Callable[[Tensor, torch.Generator], Tensor] | None = None

    def _restore(self) -> None:
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            raise FileNotFoundError(f"cannot resume: no checkpoint in {self.ckpt_dir}")
        ck = load_checkpoint(path)
        saved = ck.meta.get("train_config", {})
        diff = {k for k, v in self.config.to_dict().items() if saved.get(k) != v}
        diff -= RESUMABLE_CHANGES
        if diff:
            raise ValueError(
                f"cannot resume {self.run_dir} with a different {sorted(diff)}: "
                f"saved {[saved.get(k) for k in sorted(diff)]}"
            )
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
        bar = tqdm(
            total=config.steps,
            initial=self.start,
            disable=not (progress and info.is_main),
            dynamic_ncols=True,
            desc="train",
        )
        self.t0, self.train_seconds = time.perf_counter(), 0.0
        rng = torch.get_rng_state()
        try:
            with deferred_sigint() as interrupted:
                while self.step_done < config.steps:
                    if interrupted["set"]:
                        raise KeyboardInterrupt
                    idx = next(batches)
                    y = None if labels is None else labels[idx]
                    loss, norm, logs = self.step(self.step_done + 1, data[idx], y)
                    rng = torch.get_rng_state()  # the state a resumed run must start from
                    self.record(loss, norm, logs, bar)
                    k = self.step_done
                    if self._periodic_eval_due(k):
                        self.evaluate(k, final=False)
                    if k % config.checkpoint_every == 0:
                        self.checkpoint(k, torch.get_rng_state())
                self.finish()
        except KeyboardInterrupt:
            bar.close()
            done = self.step_done
            path = self.checkpoint(done, rng) if done > self.start else self.last_ckpt
            if info.is_main:
                print(f"probpath: interrupted after step {done}; checkpoint: {path}")
            raise
        finally:
            bar.close()
        return TrainResult(self.step_done, self.losses, self.last_eval, self.last_ckpt)

    def step(self, k: int, x: Tensor, y: Tensor | None) -> tuple[float, float, dict[str, Any]]:
        """Optimiser step ``k`` on the batch ``(x, y)``: the loss and the gradient norm
        (means over processes) and the loss's logs; a non-finite one stops training."""
        config, info, t0 = self.config, self.info, time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(k, config)
        x = x.to(self.device) if self.transform else x.to(device=self.device, dtype=self.dtype)
        y = None if y is None else y.to(self.device)
        self.gen.manual_seed(loss_seed(config.seed, info.rank, k))
        if self.transform is not None:
            x = self.transform(x, self.gen).to(self.dtype)
        self.optimizer.zero_grad(set_to_none=True)
        loss, logs = self.loss_fn(x, self.gen, y)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        stats = torch.stack([loss.detach().float(), grad_norm.detach().float()])
        if info.distributed:
            dist.all_reduce(stats)
            stats = stats / info.world_size
        loss_value, norm_value = stats.tolist()
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            where = f"; the last good checkpoint is {self.last_ckpt}" if self.last_ckpt else ""
            raise NonFiniteLossError(
                f"loss {loss_value} / gradient norm {norm_value} at step {k} is not "
                f"finite{where}; lower the learning rate, clip gradients harder or "
                "tighten the solver tolerances"
            )
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step_done = k
        self.train_seconds += time.perf_counter() - t0
        return loss_value, norm_value, logs

    def record(self, loss: float, norm: float, logs: dict[str, Any], bar: Any) -> None:
        """The step's loss, the progress bar and, every ``log_every`` steps, the means of
        the window of steps since the last record to ``metrics.jsonl``."""
        k, config = self.step_done, self.config
        self.losses.append(loss)
        for key, v in {"loss": loss, "grad_norm": norm, **logs}.items():
            self.window.setdefault(key, []).append(float(v))
        post = {"loss": f"{loss:.4f}"}
        if "nfe" in logs:
            post["nfe"] = f"{float(logs['nfe']):.0f}"
        bar.set_postfix(post, refresh=False)
        bar.update(1)
        if k % config.log_every == 0 or k == config.steps:
            elapsed = time.perf_counter() - self.t0
            means = {key: sum(v) / len(v) for key, v in self.window.items()}
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
            self.window = {}

    def _periodic_eval_due(self, k: int) -> bool:
        """Every ``eval_every`` steps before the last, within the time budget."""
        every, steps = self.config.eval_every, self.config.steps
        return (
            bool(every) and k % every == 0 and k < steps and self.held_out.due(self.train_seconds)
        )

    def evaluate(self, k: int, *, final: bool) -> None:
        """The held-out evaluation on the EMA weights (rank 0): the final one exact on all
        rows, a periodic one on the fixed subsample (see :class:`._loop.HeldOut`)."""
        if not self.held_out.full or not self.info.is_main:
            return
        with self.ema.swapped(self.model) if self.ema else nullcontext():
            out, about = self.held_out(self.model, final=final)
        record = {f"eval_{key}": v for key, v in out.items()}
        self.logger.write({"step": k, "split": "eval", **about, **record})
        self.last_eval = out

    def checkpoint(self, k: int, rng: Tensor) -> Path | None:
        """A checkpoint of step ``k`` with the RNG state ``rng`` (rank 0)."""
        if not self.info.is_main:
            return None
        config, ema = self.config, self.ema
        meta = {
            "train_config": config.to_dict(),
            "rng": {"torch_cpu": rng.tolist(), "loss_generator": "seeded per step"},
            "data_order": {"seed": config.seed, "world_size": self.info.world_size},
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
        return self.last_ckpt

    def finish(self) -> None:
        """The final evaluation, and the final checkpoint unless the last step wrote it."""
        k, config = self.step_done, self.config
        if k > self.start:
            self.evaluate(k, final=True)
        if self.last_ckpt is None or (k > self.start and k % config.checkpoint_every):
            self.checkpoint(k, torch.get_rng_state())
