"""The bodies of the ``probpath`` commands (the parser lives in :mod:`probpath.cli`)."""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .train import TrainConfig, list_checkpoints, train
from .train.run import LoadedRun, RunConfig, load_run, split_data

__all__ = ["cmd_demo", "cmd_eval", "cmd_plot", "cmd_sample", "cmd_train"]


# ---------------------------------------------------------------- helpers


def _standardizer(state: dict[str, Any] | None) -> Any:
    from .data import Standardizer

    return None if state is None else Standardizer.from_dict(state)


def _to_model_space(std: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    """Standardised rows and log|det dz/dx| per row (0 without standardisation)."""
    if std is None:
        return x, torch.zeros(len(x), dtype=x.dtype)
    return std.forward(x), torch.full((len(x),), std.log_abs_det_jacobian(), dtype=x.dtype)


def _load_rows(cfg: RunConfig) -> tuple[Tensor, Tensor]:
    from .data import load_dataset

    try:
        data = load_dataset(cfg.data, cfg.n_train + cfg.n_eval, seed=cfg.train.seed)
    except ValueError as e:
        if "asked for n=" not in str(e):
            raise
        raise ValueError(f"{e}; lower --n-train/--n-eval (their sum is drawn)") from e
    return split_data(data.to(torch.get_default_dtype()), cfg.n_train)


def _true_sampler(spec: str) -> Any:
    """``sampler(n, generator)`` of the data law, for the noise floor: fresh draws for a
    toy set; for a file, rows drawn from all of its rows (two draws may share rows, so
    the floor is then slightly optimistic)."""
    from .data import TOY_NAMES, load_dataset, sample_toy

    if spec in TOY_NAMES:
        return lambda n, g: sample_toy(spec, n, generator=g)
    rows = load_dataset(spec, None, seed=0)
    return lambda n, g: rows[torch.randperm(len(rows), generator=g)[:n]]


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = {"solver": "method", "rtol": "rtol", "atol": "atol"}
    return {k: getattr(args, a) for a, k in names.items() if getattr(args, a, None) is not None}


@contextmanager
def _count_nfe(model: nn.Module) -> Iterator[dict[str, int]]:
    """Counts forward calls of each parametrised child module; ``nfe`` is the largest
    (for a flow, the calls of its vector-field network: the function evaluations)."""
    counts: dict[str, int] = {"nfe": 0}
    handles = []
    for name, child in model.named_children():
        if any(True for _ in child.parameters()):

            def hook(*_: Any, name: str = name) -> None:
                counts[name] = counts.get(name, 0) + 1
                counts["nfe"] = max(counts["nfe"], counts[name])

            handles.append(child.register_forward_pre_hook(hook))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def _print_table(title: str, rows: dict[str, Any]) -> None:
    width = max(len(k) for k in rows)
    print(title)
    for k, v in rows.items():
        text = f"{v:.4f}" if isinstance(v, float) else str(v)
        print(f"  {k:<{width}}  {text}")


def _emit(args: argparse.Namespace, title: str, rows: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(rows))
    else:
        _print_table(title, rows)


def _load(args: argparse.Namespace) -> tuple[LoadedRun, dict[str, Any]]:
    """The run with the solver flags that are keys of its model config applied; the other
    solver flags are returned as options for the sampler or ``log_prob`` (diffusion family).
    """
    flags = _overrides(args)
    known = RunConfig.load(args.run).model_config
    run = load_run(
        args.run, ema=not args.no_ema, overrides={k: v for k, v in flags.items() if k in known}
    )
    return run, {k: v for k, v in flags.items() if k not in known}


def _sampling_kwargs(model: Any, args: argparse.Namespace, solver: dict[str, Any]) -> Any:
    """``sampler``, ``steps`` and solver options for ``model.sample_with_nfe``.

    Generic over families: the names come from ``model.samplers``, the NFE-to-steps rule
    from ``model.steps_for_nfe`` and the accepted solver options from
    ``model.SAMPLERS[name].options`` (none where absent).
    """
    sampler, steps, nfe = (getattr(args, k, None) for k in ("sampler", "steps", "nfe"))
    names = getattr(model, "samplers", None)
    if names is None:
        if sampler is not None or steps is not None or nfe is not None:
            raise ValueError(
                f"model {type(model).__name__} has a single sampler: drop --sampler/--steps/--nfe"
            )
        if solver:
            raise ValueError(f"model {type(model).__name__} takes no option {', '.join(solver)}")
        return {}
    name = sampler if sampler is not None else model.default_sampler
    if name not in names:
        raise ValueError(f"unknown sampler {name!r}; this model accepts {', '.join(names)}")
    spec = getattr(model, "SAMPLERS", {}).get(name)
    allowed = getattr(spec, "options", ())
    extra = [k for k in solver if k not in allowed]
    if extra:
        raise ValueError(f"sampler {name!r} takes no solver option {', '.join(extra)}")
    kwargs: dict[str, Any] = {"sampler": name, **solver}
    if nfe is not None:
        if not hasattr(model, "steps_for_nfe"):
            raise ValueError(f"model {type(model).__name__} takes --steps, not --nfe")
        kwargs["steps"] = model.steps_for_nfe(name, nfe, **solver)
    elif steps is not None:
        kwargs["steps"] = steps
    return kwargs


def _sample(
    run: LoadedRun, n: int, seed: int, sampling: dict[str, Any] | None = None
) -> tuple[Tensor, int]:
    gen = torch.Generator().manual_seed(seed)
    model: Any = run.model
    with _count_nfe(run.model) as c, torch.no_grad():
        if hasattr(model, "sample_with_nfe"):
            z, nfe = model.sample_with_nfe(n, generator=gen, **(sampling or {}))
        else:
            z, nfe = model.sample(n, generator=gen), None
    std = _standardizer(run.standardizer)
    return (std.inverse(z) if std is not None else z).detach(), c["nfe"] if nfe is None else nfe


# ---------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from .cli import merge_config
    from .models import build

    out: Path = args.out
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks
    if args.resume:
        from .cli import MODEL_FLAGS, RUN_FLAGS, TRAIN_FLAGS

        flags = {**RUN_FLAGS, **TRAIN_FLAGS, **MODEL_FLAGS, "config": "", "set": ""}
        given = [f for f in flags if f != "steps" and getattr(args, f) not in (None, [])]
        if given:
            names = ", ".join("--" + f.replace("_", "-") for f in given)
            raise ValueError(
                f"--resume continues with the run's saved config; only --steps "
                f"may change, got {names}"
            )
        cfg = RunConfig.load(out)
        if args.steps is not None:
            cfg = replace(cfg, train=replace(cfg.train, steps=args.steps))
    else:
        if list_checkpoints(out / "checkpoints"):
            raise ValueError(f"{out} already holds a run; add --resume or pick another --out")
        cfg = merge_config(args)
    train_x, eval_x = _load_rows(cfg)
    std = None
    if cfg.standardize:
        from .data import Standardizer

        std = Standardizer.fit(train_x)
    z_train, _ = _to_model_space(std, train_x)
    z_eval, ladj = _to_model_space(std, eval_x)
    model_config = dict(cfg.model_config)
    if train_x.ndim == 2:
        model_config.setdefault("dim", train_x.shape[1])
    torch.manual_seed(cfg.train.seed)  # the initial weights are part of the run's seed
    model = build(cfg.model, **model_config)
    if not args.resume:
        cfg = replace(cfg, model_config=dict(model.config))  # type: ignore[arg-type]
        if main_process:
            cfg.save(out)
    offset = float(ladj.mean())

    def evaluate(m: nn.Module, x: Tensor) -> dict[str, float]:
        from .train import default_evaluate

        return {"nll": default_evaluate(m, x)["nll"] - offset}  # NLL in data space, nats

    t0 = time.perf_counter()
    result = train(
        model,
        z_train,
        cfg.train,
        out,
        eval_data=z_eval,
        evaluate=evaluate,
        resume=args.resume,
        extra_state={"standardizer": std.to_dict() if std is not None else None},
        progress=not args.quiet,
    )
    rows = {"run": str(out), "step": result.step, "seconds": round(time.perf_counter() - t0, 1)}
    if result.losses:
        rows["final training loss"] = result.losses[-1]
    if "nll" in result.eval:
        rows["held-out NLL (nats)"] = result.eval["nll"]
    if main_process:
        _print_table("trained", rows)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be positive, got {args.n}")
    run, solver = _load(args)
    sampling = _sampling_kwargs(run.model, args, solver)
    t0 = time.perf_counter()
    x, nfe = _sample(run, args.n, args.seed, sampling)
    seconds = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, x.cpu().numpy(), allow_pickle=False)
    rows = {
        "run": str(args.run),
        "step": run.step,
        "n": args.n,
        "dim": int(x.shape[1]),
        **({"sampler": sampling["sampler"]} if "sampler" in sampling else {}),
        "nfe": nfe,
        "seconds": round(seconds, 3),
        "out": str(args.out),
    }
    _emit(args, "samples", rows)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from . import metrics
    from .data import TOY_ENTROPY, load_dataset

    if args.n < 2:
        raise ValueError(f"--n must be at least 2, got {args.n}")
    run, solver = _load(args)
    model: Any = run.model
    takes = inspect.signature(model.log_prob).parameters
    lp_kwargs = {k: v for k, v in solver.items() if k in takes}
    if args.nll is not None:
        if "trace" not in takes:
            raise ValueError(f"--nll applies to the diffusion family, not {type(model).__name__}")
        lp_kwargs["trace"] = args.nll
        if args.nll == "hutchinson":
            lp_kwargs["generator"] = torch.Generator().manual_seed(args.seed)
    name = args.data or run.config.data
    if args.data:
        x = load_dataset(args.data, args.n, seed=args.seed + 1).to(torch.get_default_dtype())
    else:
        x = _load_rows(run.config)[1][: args.n]
    std = _standardizer(run.standardizer)
    z, ladj = _to_model_space(std, x)
    t0 = time.perf_counter()
    with _count_nfe(run.model) as c, torch.no_grad():  # no graph across the whole solve
        logp = model.log_prob(z, **lp_kwargs) + ladj
    nll = float(-logp.mean())
    se = float(logp.std() / math.sqrt(len(logp)))
    dim = int(x[0].numel())
    rows: dict[str, Any] = {
        "run": str(args.run),
        "step": run.step,
        "data": name,
        "n": len(x),
        "nll_nats": nll,
        "nll_se": se,
        "bits_per_dim": float(metrics.bits_per_dim(nll, dim)),
        "nfe_log_prob": c["nfe"],
    }
    if hasattr(model, "nll_bound"):  # e.g. DDPM's ELBO: an upper bound of the NLL
        with torch.no_grad():
            bound = model.nll_bound(z, generator=torch.Generator().manual_seed(args.seed))
        rows["nll_bound_nats"] = float((bound - ladj).mean())
    if name in TOY_ENTROPY:
        rows["entropy_nats"] = float(TOY_ENTROPY[name])
        rows["gap_nats"] = nll - float(TOY_ENTROPY[name])
    sampling = _sampling_kwargs(model, args, {k: v for k, v in solver.items() if k not in takes})
    samples, nfe = _sample(run, len(x), args.seed, sampling)
    rows["energy_distance"] = float(metrics.energy_distance(samples, x))
    floor = metrics.noise_floor(metrics.energy_distance, _true_sampler(name), len(x), repeats=3)
    rows["noise_floor"], rows["noise_floor_std"] = floor.mean, floor.std
    rows["nfe_sample"] = nfe
    rows["seconds"] = round(time.perf_counter() - t0, 2)
    _emit(args, "evaluation (NLL in nats of the data space; energy distance vs held-out)", rows)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from . import plots

    run = load_run(args.run)
    x = _load_rows(run.config)[1][: args.n]
    samples, _ = _sample(run, len(x), args.seed)
    written = [plots.plot_samples(samples, x, args.run / "samples.png")]
    if x.ndim == 2 and x.shape[1] == 2:
        std = _standardizer(run.standardizer)

        def log_prob(pts: Tensor) -> Tensor:
            z, ladj = _to_model_space(std, pts.to(torch.get_default_dtype()))
            with torch.enable_grad():  # likelihoods by the exact trace need autograd
                return run.model.log_prob(z).detach() + ladj  # type: ignore[operator]

        lo, hi = x.min(0).values, x.max(0).values
        (x0, y0), (x1, y1) = (lo - 0.1 * (hi - lo)).tolist(), (hi + 0.1 * (hi - lo)).tolist()
        bounds = (x0, x1, y0, y1)
        written.append(
            plots.plot_density(log_prob, bounds, args.run / "density.png", resolution=100)
        )
        if hasattr(run.model, "trajectories"):
            gen = torch.Generator().manual_seed(args.seed)
            with torch.no_grad():
                paths = run.model.trajectories(min(len(x), 500), generator=gen)  # type: ignore[operator]
            if std is not None:
                paths = std.inverse(paths)
            written.append(plots.plot_trajectories(paths, args.run / "trajectories.png"))
    log = args.run / "metrics.jsonl"
    if log.is_file():
        present = set().union(*(json.loads(line) for line in log.read_text().splitlines()))
        keys = [k for k in ("loss", "nfe", "eval_nll", "grad_norm", "lr") if k in present]
        written.append(plots.plot_training_curves(log, args.run / "training_curves.png", keys=keys))
    for p in written:
        print(p)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .cli import main
    from .models import CNF

    out = str(args.out)
    cfg = RunConfig(
        model="cnf",
        model_config={
            "hidden": [64, 64, 64],
            "trace": "exact",
            "method": "dopri5",
            "rtol": 1e-5,
            "atol": 1e-5,
        },
        data="8gaussians",
        n_train=20_000,
        n_eval=2_000,
        train=TrainConfig(
            **{**CNF.train_defaults, "steps": args.steps},
            eval_every=100,
            log_every=25,
            checkpoint_every=250,
        ),
    )
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    resume = bool(list_checkpoints(path / "checkpoints"))
    if resume:  # running the demo again continues an interrupted one
        argv = ["train", "--out", out, "--resume", "--steps", str(args.steps)]
    else:
        argv = ["train", "--out", out, "--config", str(cfg.save(path))]
    argv += ["--quiet"] * args.quiet
    for step in (argv, ["plot", out], ["eval", out]):
        code = main(step)
        if code:
            return code
    return 0
