"""The loop behind :func:`probpath.train.train` (private): set-up or resume, then steps,
flushes, held-out evaluations and checkpoints on schedule."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..device import autocast, compile_networks, grad_scaler
from ._feed import Batches, Pending, Window
from ._loop import HeldOut, JsonlLogger, deferred_sigint, loss_seed
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, lr_factor
from .distributed import DistInfo, LossModule, agree, batch_indices
from .ema import EMA

__all__ = ["TrainResult", "TrainingLoop"]


@dataclass(frozen=True)
class TrainResult:
    """What :func:`~probpath.train.train` returns: the last step reached, the loss of every
    step run by this call (mean over processes), the last evaluation and the last checkpoint."""

    step: int
    losses: list[float]
    eval: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


class TrainingLoop:
    """One call of :func:`~probpath.train.train`, read top-down: the set-up (``__init__``:
    fresh, or resumed by :meth:`_restore`), then :meth:`run`, which repeats :meth:`step`,
    :meth:`flush`, :meth:`evaluate` and :meth:`checkpoint` and ends with :meth:`finish`.

    A step reads nothing back to the host: its numbers are read when the trainer logs,
    evaluates or checkpoints (:meth:`flush`), where a non-finite step stops training."""

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
        transform: Callable[[Tensor, torch.Generator], Tensor] | None,
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
        self.transform = transform
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
