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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .train import TrainConfig, list_checkpoints, load_checkpoint, train
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


@dataclass(frozen=True)
class _Rows:
    """A run's training and held-out rows; their labels and class names if asked for."""

    train: Tensor
    eval: Tensor
    train_y: Tensor | None = None
    eval_y: Tensor | None = None
    classes: tuple[str, ...] = ()


def _labelled(cfg: RunConfig) -> bool:
    """A conditional model or a classifier: its config has ``n_classes`` > 0."""
    return int(cfg.model_config.get("n_classes") or 0) > 0


def _load_rows(cfg: RunConfig, labels: bool = False) -> _Rows:
    """The rows of ``cfg`` (sizes by :meth:`RunConfig.sizes`): a toy set draws
    ``n_train + n_eval`` samples, a finite set takes them from its seeded shuffle."""
    from .data import is_finite, load_dataset, load_labelled

    finite = is_finite(cfg.data)
    n = None if finite else sum(cfg.sizes(None))
    seed, dtype = cfg.train.seed, torch.get_default_dtype()
    if labels:
        d = load_labelled(cfg.data, n, seed=seed, dtype=dtype, label_column=cfg.label_column)
        x, y, classes = d.x, d.y, d.classes
    else:
        x = load_dataset(cfg.data, n, seed=seed, dtype=dtype, label_column=cfg.label_column)
        y, classes = None, ()
    n_train, n_eval = cfg.sizes(len(x) if finite else None)
    x = x[: n_train + n_eval]
    train_x, eval_x = split_data(x, n_train)
    if y is None:
        return _Rows(train_x, eval_x)
    return _Rows(train_x, eval_x, y[:n_train], y[n_train : n_train + n_eval], classes)


def _load_features(
    spec: str, n: int | None, label_column: int | str | None, *, seed: int, dtype: torch.dtype
) -> Tensor:
    """``load_dataset`` of ``spec`` (data other than a run's own): a file loses the run's
    ``label_column``, which other data do not have."""
    from .data import DIGITS, is_finite, load_dataset

    column = label_column if is_finite(spec) and spec != DIGITS else None
    return load_dataset(spec, n, seed=seed, dtype=dtype, label_column=column)


def _true_sampler(spec: str, label_column: int | str | None) -> Any:
    """``sampler(n, generator)`` of the data law, for the noise floor: fresh draws for a
    toy set; for a finite set, rows drawn from all of its rows (two draws may share rows,
    so the floor is then slightly optimistic)."""
    from .data import TOY_NAMES, sample_toy

    if spec in TOY_NAMES:
        return lambda n, g: sample_toy(spec, n, generator=g)
    rows = _load_features(spec, None, label_column, seed=0, dtype=torch.get_default_dtype())
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
    ``model.sampler_options(name)``.
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
    allowed = model.sampler_options(name)  # raises for an unknown name, listing the known
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
    run: LoadedRun,
    n: int,
    seed: int,
    sampling: dict[str, Any] | None = None,
    model: Any = None,
) -> tuple[Tensor, int]:
    """``n`` samples in data space from ``model`` (default: the run's; e.g. a guided view
    of it) and the NFE used."""
    gen = torch.Generator().manual_seed(seed)
    model = run.model if model is None else model
    with _count_nfe(model) as c, torch.no_grad():
        if hasattr(model, "sample_with_nfe"):
            z, nfe = model.sample_with_nfe(n, generator=gen, **(sampling or {}))
        else:
            z, nfe = model.sample(n, generator=gen), None
    std = _standardizer(run.standardizer)
    return (std.inverse(z) if std is not None else z).detach(), c["nfe"] if nfe is None else nfe


# ---------------------------------------------------------------- commands


def _like(cfg: RunConfig, args: argparse.Namespace) -> tuple[RunConfig, dict[str, Any] | None]:
    """``--like RUN`` for a noisy classifier: RUN's path (``schedule_config``), and its
    data, label column, sizes, seed and standardisation where no flag sets them, so the
    classifier reads ``x_t`` in the same space as RUN's model. Returns the config and
    RUN's standardisation (a dict or ``None``)."""
    from .cli import MODEL_FLAGS, RUN_FLAGS

    if cfg.model != "noisy-classifier":
        raise ValueError(f"--like applies to --model noisy-classifier, not {cfg.model}")
    like = load_run(args.like)
    schedule_config = getattr(like.model, "schedule_config", None)
    if schedule_config is None:
        raise ValueError(f"--like {args.like}: a {like.config.model} run has no diffusion path")
    src = like.config
    unset = [k for f, k in RUN_FLAGS.items() if getattr(args, f) is None and k != "model"]
    run = {k: getattr(src, k) for k in unset}
    set_keys = {k for k, _ in args.set} | {k for f, k in MODEL_FLAGS.items() if getattr(args, f)}
    clash = set_keys & set(schedule_config)
    if clash:
        raise ValueError(f"--like copies the path of {args.like}; drop --set {', '.join(clash)}")
    train = cfg.train if args.seed is not None else replace(cfg.train, seed=src.train.seed)
    model_config = {**cfg.model_config, **schedule_config}
    cfg = replace(cfg, **run, train=train, model_config=model_config)
    return cfg, like.standardizer if cfg.standardize else None


def cmd_train(args: argparse.Namespace) -> int:
    from .cli import merge_config
    from .models import MODELS, DiffusionModel, build

    out: Path = args.out
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks
    like_std: dict[str, Any] | None = None
    if args.resume:
        from .cli import MODEL_FLAGS, RUN_FLAGS, TRAIN_FLAGS

        flags = {**RUN_FLAGS, **TRAIN_FLAGS, **MODEL_FLAGS, "config": "", "set": ""}
        flags.update(conditional="", like="")
        given = [f for f in flags if f != "steps" and getattr(args, f) not in (None, [], False)]
        if given:
            names = ", ".join("--" + f.replace("_", "-") for f in given)
            raise ValueError(
                f"--resume continues with the run's saved config; only --steps "
                f"may change, got {names}"
            )
        cfg = RunConfig.load(out)
        if args.steps is not None:
            cfg = replace(cfg, train=replace(cfg.train, steps=args.steps))
        labelled = _labelled(cfg)
    else:
        if list_checkpoints(out / "checkpoints"):
            raise ValueError(f"{out} already holds a run; add --resume or pick another --out")
        cfg = merge_config(args)
        if args.like is not None:
            cfg, like_std = _like(cfg, args)
        family = MODELS.get(cfg.model)
        diffusion = isinstance(family, type) and issubclass(family, DiffusionModel)
        if args.conditional and not diffusion:
            raise ValueError(
                f"--conditional applies to the diffusion family (ddpm, ncsn, sde, fm), "
                f"not {cfg.model}"
            )
        if args.p_uncond is not None and not args.conditional:
            raise ValueError("--p-uncond is the label dropout of a --conditional model")
        labelled = args.conditional or cfg.model == "noisy-classifier"
    rows = _load_rows(cfg, labels=labelled)
    if not args.resume:
        n_train, n_eval = len(rows.train), len(rows.eval)
        cfg = replace(cfg, n_train=n_train, n_eval=n_eval)
    std = None
    if args.resume:
        std = _standardizer(load_checkpoint(out / "checkpoints").meta["extra"]["standardizer"])
    elif args.like is not None:
        std = _standardizer(like_std)
    elif cfg.standardize:
        from .data import Standardizer

        std = Standardizer.fit(rows.train)
    z_train, _ = _to_model_space(std, rows.train)
    z_eval, ladj = _to_model_space(std, rows.eval)
    model_config = dict(cfg.model_config)
    if rows.train.ndim == 2:
        model_config.setdefault("dim", rows.train.shape[1])
    if labelled:
        k = model_config.setdefault("n_classes", len(rows.classes))
        if k != len(rows.classes):
            raise ValueError(
                f"n_classes={k} was set, but the data hold {len(rows.classes)} classes"
            )
    torch.manual_seed(cfg.train.seed)  # the initial weights are part of the run's seed
    model = build(cfg.model, **model_config)
    if not args.resume:
        cfg = replace(cfg, model_config=dict(model.config))  # type: ignore[arg-type]
        if main_process:
            cfg.save(out)
    offset = float(ladj.mean())

    def evaluate(m: nn.Module, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        from .train import default_evaluate

        scores = default_evaluate(m, x, y)
        if "nll" in scores:
            scores["nll"] -= offset  # NLL in data space, nats
        return scores

    t0 = time.perf_counter()
    result = train(
        model,
        z_train,
        cfg.train,
        out,
        eval_data=z_eval,
        evaluate=evaluate,
        resume=args.resume,
        extra_state={
            "standardizer": std.to_dict() if std is not None else None,
            "classes": list(rows.classes) if labelled else None,
            **({"like": str(args.like)} if args.like is not None else {}),
        },
        progress=not args.quiet,
        labels=rows.train_y,
        eval_labels=rows.eval_y,
    )
    table = {"run": str(out), "step": result.step, "seconds": round(time.perf_counter() - t0, 1)}
    if result.losses:
        table["final training loss"] = result.losses[-1]
    if "nll" in result.eval:
        table["held-out NLL (nats)"] = result.eval["nll"]
    if "accuracy" in result.eval:
        table["held-out accuracy"] = result.eval["accuracy"]
    if main_process:
        _print_table("trained", table)
    return 0


def _label_index(label: str, classes: tuple[str, ...], run: Path) -> int:
    """The index of ``label`` among a run's class names (its data's labels)."""
    if label not in classes:
        shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
        raise ValueError(f"label {label!r} is not a class of {run}; its classes: {shown}")
    return classes.index(label)


def _guided(run: LoadedRun, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The model ``probpath sample`` draws from: the run's, or its guided view for
    ``--label`` (``--guidance cfg`` or ``classifier`` with ``--classifier RUN``)."""
    guidance_flags = {
        "--guidance": args.guidance,
        "--scale": args.scale,
        "--classifier": args.classifier,
    }
    if args.label is None:
        given = [k for k, v in guidance_flags.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} guide towards a class: add --label")
        return run.model, {}
    from .guidance import guide
    from .models import DiffusionModel, NoisyClassifier

    if not isinstance(run.model, DiffusionModel):
        raise ValueError(f"--label guides the diffusion family, not a {run.config.model} run")
    method = args.guidance or ("classifier" if args.classifier is not None else "cfg")
    scale = 1.0 if args.scale is None else args.scale
    classifier, classes, source = None, run.classes, args.run
    if method == "classifier":
        if args.classifier is None:
            raise ValueError(
                "--guidance classifier needs --classifier RUN (train one with probpath train "
                f"--model noisy-classifier --like {args.run})"
            )
        clf = load_run(args.classifier, ema=not args.no_ema)
        if not isinstance(clf.model, NoisyClassifier):
            raise ValueError(f"--classifier {args.classifier} is a {clf.config.model} run")
        if clf.standardizer != run.standardizer:
            raise ValueError(
                f"--classifier {args.classifier} reads data standardised differently from "
                f"{args.run}; train it with --like {args.run}"
            )
        classifier, classes, source = clf.model, clf.classes, args.classifier
    elif args.classifier is not None:
        raise ValueError("--classifier belongs to --guidance classifier")
    elif not run.classes:
        raise ValueError(
            f"{args.run} is unconditional: classifier-free guidance needs a run trained with "
            "--conditional; or use --guidance classifier --classifier RUN"
        )
    y = _label_index(args.label, classes, source)
    model = guide(run.model, y, scale, method=method, classifier=classifier)
    return model, {"label": args.label, "guidance": method, "scale": scale}


def cmd_sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be positive, got {args.n}")
    run, solver = _load(args)
    model, guided = _guided(run, args)
    sampling = _sampling_kwargs(model, args, solver)
    t0 = time.perf_counter()
    x, nfe = _sample(run, args.n, args.seed, sampling, model)
    seconds = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, x.cpu().numpy(), allow_pickle=False)
    rows = {
        "run": str(args.run),
        "step": run.step,
        "n": args.n,
        "dim": int(x.shape[1]),
        **guided,
        **({"sampler": sampling["sampler"]} if "sampler" in sampling else {}),
        "nfe": nfe,
        "seconds": round(seconds, 3),
        "out": str(args.out),
    }
    _emit(args, "samples", rows)
    return 0


def _eval_classifier(args: argparse.Namespace, run: LoadedRun) -> int:
    """``probpath eval`` of a classifier run: held-out cross-entropy (at random noise
    levels, as trained) and accuracy (on clean rows)."""
    from .train import default_evaluate

    if args.data:
        raise ValueError("--data: a classifier run is evaluated on its own held-out rows")
    rows = _load_rows(run.config, labels=True)
    z, _ = _to_model_space(_standardizer(run.standardizer), rows.eval[: args.n])
    y = None if rows.eval_y is None else rows.eval_y[: args.n]
    scores = default_evaluate(run.model, z, y)
    table = {"run": str(args.run), "step": run.step, "data": run.config.data, "n": len(z)}
    _emit(args, "evaluation (held-out rows)", {**table, **scores})
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from . import metrics
    from .data import TOY_ENTROPY

    if args.n < 2:
        raise ValueError(f"--n must be at least 2, got {args.n}")
    run, solver = _load(args)
    model: Any = run.model
    if not hasattr(model, "log_prob"):
        return _eval_classifier(args, run)
    takes = inspect.signature(model.log_prob).parameters
    lp_kwargs = {k: v for k, v in solver.items() if k in takes}
    if args.nll is not None:
        if "trace" not in takes:
            raise ValueError(f"--nll applies to the diffusion family, not {type(model).__name__}")
        lp_kwargs["trace"] = args.nll
        if args.nll == "hutchinson":
            lp_kwargs["generator"] = torch.Generator().manual_seed(args.seed)
    name = args.data or run.config.data
    column = run.config.label_column
    if args.data:
        dtype = torch.get_default_dtype()
        x = _load_features(args.data, args.n, column, seed=args.seed + 1, dtype=dtype)
    else:
        x = _load_rows(run.config).eval[: args.n]
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
    floor = metrics.noise_floor(
        metrics.energy_distance, _true_sampler(name, column), len(x), repeats=3
    )
    rows["noise_floor"], rows["noise_floor_std"] = floor.mean, floor.std
    rows["nfe_sample"] = nfe
    rows["seconds"] = round(time.perf_counter() - t0, 2)
    _emit(args, "evaluation (NLL in nats of the data space; energy distance vs held-out)", rows)
    return 0


def _sample_per_label(run: LoadedRun, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """About ``n`` samples of a conditional run, ``n // K`` (at least 1) from each class
    k = 0..K-1 by classifier-free guidance at scale 1 (the learnt p(x | y = k)), and their
    labels."""
    from .guidance import guide

    per = max(1, n // len(run.classes))
    parts = [
        _sample(run, per, seed + k, model=guide(run.model, k, 1.0))[0]  # type: ignore[arg-type]
        for k in range(len(run.classes))
    ]
    return torch.cat(parts), torch.arange(len(parts)).repeat_interleave(per)


def cmd_plot(args: argparse.Namespace) -> int:
    from . import plots
    from .data import DIGITS, DIGITS_SHAPE

    run = load_run(args.run)
    generative = hasattr(run.model, "sample")  # not a classifier run
    conditional = generative and bool(run.classes)
    rows = _load_rows(run.config, labels=bool(run.classes))
    x = rows.eval[: args.n]
    x_labels = None if rows.eval_y is None else rows.eval_y[: args.n]
    written = []
    two_d = x.ndim == 2 and x.shape[1] == 2
    if generative and run.config.data == DIGITS:  # a grid of 8 x 8 images, a row per label
        if conditional:
            images = _sample_per_label(run, 10 * len(run.classes), args.seed)[0]
        else:
            images = _sample(run, 100, args.seed)[0]
        path = args.run / "samples.png"
        written.append(
            plots.plot_image_grid(images, path, nrow=10, image_shape=DIGITS_SHAPE, vmin=-1, vmax=1)
        )
    elif generative and two_d:
        if conditional:
            samples, labels = _sample_per_label(run, len(x), args.seed)
        else:
            samples, labels = _sample(run, len(x), args.seed)[0], None
        path = args.run / "samples.png"
        written.append(plots.plot_samples(samples, x, path, labels=labels, data_labels=x_labels))
    if generative and two_d:
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
        names = ("loss", "nfe", "eval_nll", "eval_loss", "eval_accuracy", "grad_norm", "lr")
        keys = [k for k in names if k in present]
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
