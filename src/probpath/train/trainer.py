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

from ._loop import JsonlLogger, check_data, check_label_rows, deferred_sigint, loss_seed
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import RESUMABLE_CHANGES, TrainConfig, lr_factor
from .distributed import DistInfo, LossModule, batch_indices, setup, teardown
from .ema import EMA

__all__ = ["NonFiniteLossError", "TrainResult", "default_evaluate", "train"]

Evaluate = Callable[..., dict[str, float]]
"""``evaluate(model, eval_data)``, or ``evaluate(model, eval_data, eval_labels)`` when the
trainer has held-out labels."""


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


def default_evaluate(
    model: nn.Module, data: Tensor, labels: Tensor | None = None, chunk: int = 2048
) -> dict[str, float]:
    """Held-out negative log-likelihood in nats, ``-mean(model.log_prob(x))``.

    Runs under ``torch.no_grad()``: an ODE likelihood keeps no graph across its solve (whose
    step count an untrained diffusion model can push into the thousands). A conditional
    model's ``log_prob`` is its unconditional (null-label) likelihood, so ``labels`` are not
    used. A model without ``log_prob`` (a classifier) is scored by its held-out training
    loss with ``labels`` and a fixed noise seed (``loss``), and by ``model.accuracy(x, y)``
    where it has one (``accuracy``).
    """
    p = next(model.parameters())
    m: Any = model
    sums: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        sums[key] = sums.get(key, 0.0) + value

    gen = torch.Generator(device=p.device).manual_seed(0)
    ys = [None] * len(data.split(chunk)) if labels is None else labels.split(chunk)
    with torch.no_grad():
        for xb, yb in zip(data.split(chunk), ys, strict=True):
            xb = xb.to(device=p.device, dtype=p.dtype)
            if hasattr(m, "log_prob"):
                add("nll", -float(m.log_prob(xb).sum()))
                continue
            kw = {} if yb is None else {"y": yb.to(p.device)}
            add("loss", float(m.loss(xb, generator=gen, **kw)[0]) * len(xb))
            if yb is not None and hasattr(m, "accuracy"):
                add("accuracy", m.accuracy(xb, kw["y"]) * len(xb))
    return {k: v / len(data) for k, v in sums.items()}


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
) -> TrainResult:
    """Train ``model`` on the rows of ``data`` by minimising ``model.loss``.

    Each step draws a mini-batch (a seeded shuffle per epoch), calls
    ``model.loss(x, generator=g)``, clips the gradient norm, takes an Adam/AdamW step at
    the scheduled learning rate (:func:`~probpath.train.config.lr_factor`) and updates the
    EMA weights. Every ``log_every`` steps a record goes to ``run_dir/metrics.jsonl``;
    every ``eval_every`` steps (and at the end) ``evaluate(model, eval_data)`` runs on the
    EMA weights (default: held-out NLL); every ``checkpoint_every`` steps (and at the
    end) a checkpoint goes to ``run_dir/checkpoints`` (see :mod:`.checkpoint`), holding
    also ``extra_state`` (JSON, e.g. the data standardisation and class names).

    ``labels`` (integer, one per row of ``data``) make the run conditional: each batch's
    labels go along as ``model.loss(x, y=y, generator=g)`` (a conditional network, which
    drops them itself with probability ``p_uncond``, or a classifier); ``eval_labels``
    go to ``evaluate(model, eval_data, eval_labels)``.

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
    check_data(data, "data")
    if eval_data is not None:
        check_data(eval_data, "eval_data")
    if labels is not None:
        check_label_rows(labels, data, "labels")
    if eval_labels is not None:
        if eval_data is None:
            raise ValueError("eval_labels were given without eval_data")
        check_label_rows(eval_labels, eval_data, "eval_labels")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    run_dir = Path(run_dir)
    info = setup(params[0].device)
    try:
        result = _train(
            model,
            params,
            data,
            config,
            run_dir,
            info,
            eval_data,
            evaluate,
            resume,
            extra_state,
            progress,
            labels,
            eval_labels,
        )
        if info.distributed:  # rank 0 may still write its checkpoint: leave together
            dist.barrier()
        return result
    finally:
        teardown(info)


def _train(
    model: nn.Module,
    params: list[nn.Parameter],
    data: Tensor,
    config: TrainConfig,
    run_dir: Path,
    info: DistInfo,
    eval_data: Tensor | None,
    evaluate: Evaluate | None,
    resume: bool,
    extra_state: dict[str, Any] | None,
    progress: bool,
    labels: Tensor | None,
    eval_labels: Tensor | None,
) -> TrainResult:
    device = info.device or params[0].device
    model.to(device)
    dtype = params[0].dtype
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    # fused=True: one kernel for the whole update (6-10% of a flow-matching step here).
    optimizer = opt_cls(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
    ckpt_dir = run_dir / "checkpoints"
    start = 0
    last_ckpt: Path | None = None
    extra = dict(extra_state or {})
    if resume:
        path = latest_checkpoint(ckpt_dir)
        if path is None:
            raise FileNotFoundError(f"cannot resume: no checkpoint in {ckpt_dir}")
        ck = load_checkpoint(path)
        saved = ck.meta.get("train_config", {})
        diff = {k for k, v in config.to_dict().items() if saved.get(k) != v} - RESUMABLE_CHANGES
        if diff:
            raise ValueError(
                f"cannot resume {run_dir} with a different {sorted(diff)}: "
                f"saved {[saved.get(k) for k in sorted(diff)]}"
            )
        model.load_state_dict(ck.model)
        if ck.optimizer is not None:
            optimizer.load_state_dict(ck.optimizer)
        if ema is not None and ck.ema is not None:
            ema.load_state_dict(ck.ema, ck.meta.get("ema_num_updates", 0))
        if info.is_main:
            torch.set_rng_state(torch.tensor(ck.meta["rng"]["torch_cpu"], dtype=torch.uint8))
        else:
            torch.manual_seed(loss_seed(config.seed, info.rank, ck.step) + 1)
        extra = {**ck.meta.get("extra", {}), **extra}
        start, last_ckpt = ck.step, path
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed + info.rank)
    if info.distributed and info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    logger = JsonlLogger(run_dir, info.is_main, start if resume else None)

    adapter = LossModule(model)
    loss_fn: nn.Module = adapter
    if info.distributed:
        ids = [device] if device.type == "cuda" else None
        loss_fn = nn.parallel.DistributedDataParallel(adapter, device_ids=ids)
    batches = batch_indices(len(data), config.batch_size, info, seed=config.seed, start_step=start)
    gen = torch.Generator(device=device)
    evaluate_fn = evaluate or default_evaluate
    clip = config.grad_clip if config.grad_clip > 0 else math.inf

    def checkpoint(step: int, rng: Tensor) -> Path | None:
        if not info.is_main:
            return None
        meta = {
            "train_config": config.to_dict(),
            "rng": {"torch_cpu": rng.tolist(), "loss_generator": "seeded per step"},
            "data_order": {"seed": config.seed, "world_size": info.world_size},
            "ema_num_updates": ema.num_updates if ema else 0,
            "extra": extra,
        }
        return save_checkpoint(
            ckpt_dir,
            step,
            model=model.state_dict(),
            ema=ema.state_dict() if ema else None,
            optimizer=optimizer.state_dict(),
            meta=meta,
            keep=config.keep_checkpoints,
        )

    def run_eval(step: int) -> dict[str, float]:
        if eval_data is None or not info.is_main:
            return {}
        with ema.swapped(model) if ema else nullcontext():
            args = (eval_data,) if eval_labels is None else (eval_data, eval_labels)
            out = {k: float(v) for k, v in evaluate_fn(model, *args).items()}
        logger.write({"step": step, "split": "eval", **{f"eval_{k}": v for k, v in out.items()}})
        return out

    losses: list[float] = []
    window: dict[str, list[float]] = {}
    last_eval: dict[str, float] = {}
    step = start
    bar = tqdm(
        total=config.steps,
        initial=start,
        disable=not (progress and info.is_main),
        dynamic_ncols=True,
        desc="train",
    )
    t0 = time.perf_counter()
    rng = torch.get_rng_state()
    try:
        with deferred_sigint() as interrupted:
            while step < config.steps:
                if interrupted["set"]:
                    raise KeyboardInterrupt
                k = step + 1
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * lr_factor(k, config)
                idx = next(batches)
                x = data[idx].to(device=device, dtype=dtype)
                y = None if labels is None else labels[idx].to(device)
                gen.manual_seed(loss_seed(config.seed, info.rank, k))
                optimizer.zero_grad(set_to_none=True)
                loss, logs = loss_fn(x, gen, y)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
                stats = torch.stack([loss.detach().float(), grad_norm.detach().float()])
                if info.distributed:
                    dist.all_reduce(stats)
                    stats = stats / info.world_size
                loss_value, norm_value = stats.tolist()
                if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                    where = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else ""
                    raise NonFiniteLossError(
                        f"loss {loss_value} / gradient norm {norm_value} at step {k} is not "
                        f"finite{where}; lower the learning rate, clip gradients harder or "
                        "tighten the solver tolerances"
                    )
                optimizer.step()
                if ema is not None:
                    ema.update(model)
                step = k
                rng = torch.get_rng_state()  # the state a resumed run must start from
                losses.append(loss_value)
                for key, v in {"loss": loss_value, "grad_norm": norm_value, **logs}.items():
                    window.setdefault(key, []).append(float(v))
                post = {"loss": f"{loss_value:.4f}"}
                if "nfe" in logs:
                    post["nfe"] = f"{float(logs['nfe']):.0f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
                if step % config.log_every == 0 or step == config.steps:
                    elapsed = time.perf_counter() - t0
                    rec = {k2: sum(v) / len(v) for k2, v in window.items()}
                    logger.write(
                        {
                            "step": step,
                            "split": "train",
                            **rec,
                            "lr": optimizer.param_groups[0]["lr"],
                            "it_s": (step - start) / max(elapsed, 1e-9),
                            "time": elapsed,
                        }
                    )
                    window = {}
                if config.eval_every and step % config.eval_every == 0:
                    last_eval = run_eval(step)
                if step % config.checkpoint_every == 0:
                    last_ckpt = checkpoint(step, torch.get_rng_state())
            if step > start and (not config.eval_every or step % config.eval_every):
                last_eval = run_eval(step)
            if last_ckpt is None or (step > start and step % config.checkpoint_every):
                last_ckpt = checkpoint(step, torch.get_rng_state())
    except KeyboardInterrupt:
        bar.close()
        path = checkpoint(step, rng) if step > start else last_ckpt
        if info.is_main:
            print(f"probpath: interrupted after step {step}; checkpoint: {path}")
        raise
    finally:
        bar.close()
    return TrainResult(step=step, losses=losses, eval=last_eval, checkpoint=last_ckpt)
