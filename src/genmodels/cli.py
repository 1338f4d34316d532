"""The ``genmodels`` command: list, train, sample, evaluate, tour, bench.

    genmodels list
    genmodels train ddpm --data moons [--steps N] [--set key=value ...] [--resume]
    genmodels sample runs/ddpm-moons --n 1000 --out samples.png [--sampler ddim]
    genmodels evaluate runs/ddpm-moons [--n N]
    genmodels tour [--budget smoke|small|full] [--out DIR] [--sections 1,3,7]
    genmodels bench [--quick] [--only ode,gp] [--out bench.json]

Bad input gets one line on stderr naming what is wrong and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage too)
        self.exit(2, f"genmodels: error: {message} (see 'genmodels {self._sub} --help')\n")

    _sub = ""


_SNR_HELP = (
    "with --sampler pc: the Langevin corrector's signal-to-noise ratio (default: 0.04 on "
    "points, 0.16 on images)"
)


def _check_snr_arg(args) -> None:
    if args.snr is None:
        return
    from .models.samplers import check_snr

    if args.sampler != "pc":
        raise ValueError("--snr is the pc sampler's Langevin setting: use it with --sampler pc")
    check_snr(args.snr)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="genmodels", description="Generative models of the lecture, made real.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="registered models and data sets")

    t = sub.add_parser("train", help="train a model; writes a run directory")
    t._sub = "train"
    t.add_argument("model", help="a registered model (see 'genmodels list')")
    t.add_argument("--data", help="data set (default: the model's own default)")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--out", help="run directory (default: runs/MODEL-DATA)")
    t.add_argument("--config", help="JSON file of model/train config fields")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model, train or data option (JSON literal; prefix model., train. "
        "or data. where needed, data options always: data.n_obs=30); repeatable",
    )
    t.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    t.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY",
        help="with --resume: let train config field KEY differ from the recorded run "
        "(the change is recorded in config.json); repeatable",
    )
    t.add_argument("--device", choices=["auto", "cpu", "cuda"])
    t.add_argument("--dtype", choices=["float32", "float64"])
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s._sub = "sample"
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--out", required=True, help="FILE.npy (samples) or FILE.png (picture)")
    s.add_argument("--sampler", help="e.g. ancestral or ddim for ddpm")
    s.add_argument("--steps", type=int, help="sampler steps (e.g. DDIM steps)")
    s.add_argument(
        "--variable",
        help="with --sampler ode: the probability flow ODE's integration variable, "
        "t (default), sigma or log_sigma",
    )
    s.add_argument("--snr", type=float, help=_SNR_HELP)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])

    e = sub.add_parser("evaluate", help="evaluate a trained run; writes DIR/metrics.json")
    e._sub = "evaluate"
    e.add_argument("run_dir")
    e.add_argument(
        "--n",
        type=int,
        help="number of samples (default: the test split's size; images: the training split's)",
    )
    e.add_argument(
        "--bound-n",
        type=_count_or_all,
        metavar="N|all",
        help="test points for a variational bound and, for a diffusion model trained with "
        "dequantisation, its PF-ODE likelihood on images (the same seeded subset); 'all': the "
        "whole test split (default: all; a DDPM on images: 100; subvp/vesde on images: 100)",
    )
    e.add_argument("--sampler")
    e.add_argument("--steps", type=int)
    e.add_argument(
        "--variable",
        help="a diffusion model's probability flow ODE variable, t (default), sigma or "
        "log_sigma: for the PF-ODE likelihood and, with --sampler ode, the sampler",
    )
    e.add_argument("--snr", type=float, help=_SNR_HELP)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])

    r = sub.add_parser(
        "tour",
        help="train, evaluate and picture every model of the lecture, section by section",
        description="Train every registered model on its default data (and every density "
        "model also on moons, for one comparison table) within a budget, evaluate each, and "
        "write DIR/results.json. Run it again in the same --out to continue a stopped tour.",
    )
    r._sub = "tour"
    r.add_argument(
        "--budget",
        default="smoke",
        choices=["smoke", "small", "full"],
        help="smoke: under a minute, a check that everything runs (its numbers mean nothing); "
        "small: about 10 minutes of one CPU core; full: the budgets of the docs (hours)",
    )
    r.add_argument("--out", default="tour", help="output directory (default: ./tour)")
    r.add_argument("--sections", help="lecture sections to run, e.g. 1,3,7 (default: all)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    from .bench import add_arguments as _bench_arguments  # no peer is imported here

    b = sub.add_parser(
        "bench",
        help="every peer comparison (torchdiffeq, torchsde, torchcde, zuko, diffusers, GPyTorch, "
        "scikit-learn) in one run; needs the 'bench' extra",
    )
    b._sub = "bench"
    _bench_arguments(b)
    return p


def _split_overrides(values: dict, model_fields: set, train_fields: set, where: str):
    """``(model, train, data)`` overrides from ``{key: value}``; keys may be scoped
    ``model.``/``train.``/``data.`` (data options always are)."""
    from .config import ConfigError

    model_over, train_over, data_over = {}, {}, {}
    for key, value in values.items():
        scope, _, name = key.partition(".") if "." in key else ("", "", key)
        if scope and scope not in ("model", "train", "data"):
            raise ConfigError(
                f"{where}: unknown scope {scope!r} in {key!r}; use model., train. or data."
            )
        if scope == "data":
            target = data_over
        elif scope == "model" or (not scope and name in model_fields):
            target = model_over
        elif scope == "train" or (not scope and name in train_fields):
            target = train_over
        else:
            known = ", ".join(sorted(model_fields | train_fields))
            raise ConfigError(
                f"{where}: unknown key {key!r}; known keys: {known} (data options: data.KEY)"
            )
        target[name] = value
    return model_over, train_over, data_over


def _count_or_all(text: str):
    """``--bound-n``: a positive integer or ``all``."""
    if text.strip().lower() == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'all', got {text!r}"
        ) from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return n


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        raise ValueError(f"--seed must be an integer in [0, 2**63), got {seed}")


def _check_writable(path: Path, what: str) -> None:
    """One clear error, before any work, when ``path`` cannot be written."""
    import tempfile

    if path.is_dir():
        raise ValueError(f"{what} {path}: is a directory, expected a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{what} {path}: directory {parent} does not exist")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise ValueError(f"{what} {path}: cannot write in {parent} ({e.strerror})") from e


def _cmd_list(args) -> int:
    from . import data, registry

    print("models:")
    for spec in registry.specs():
        print(f"  {spec.name:<16} {spec.description} (default data: {spec.default_data})")
    print("data sets:")
    for name, desc in data.describe().items():
        print(f"  {name:<16} {desc}")
    return 0


def _read_config_file(path: str) -> dict:
    try:
        cfg = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ValueError(f"--config {path}: file not found") from e
    except IsADirectoryError as e:
        raise ValueError(f"--config {path}: is a directory, expected a JSON file") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path}: not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"--config {path}: expected a JSON object")
    return cfg


def _cmd_train(args) -> int:
    import dataclasses

    from . import data as data_mod
    from . import registry
    from .config import ConfigError, apply_overrides, parse_set, to_json_dict
    from .train import TrainConfig, fit
    from .train.run_dir import RunDir

    spec = registry.get(args.model)
    data_name = args.data or spec.default_data
    if data_name not in data_mod.names():
        data_mod.load(data_name)  # raises the "unknown data set" error
    model_fields = {f.name for f in dataclasses.fields(spec.config)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = Path(args.out or f"runs/{spec.name}-{data_name}")

    # What the user asked for explicitly: --config, the flags, --set (in that order).
    model_over: dict = {}
    train_over: dict = {}
    data_over: dict = {}
    if args.config:
        file_cfg = _read_config_file(args.config)
        if "model_config" in file_cfg or "train_config" in file_cfg:  # a run's config.json
            model_over.update(file_cfg.get("model_config", {}))
            train_over.update(file_cfg.get("train_config", {}))
            data_over.update(file_cfg.get("data_options") or {})
        else:
            m, t, d = _split_overrides(
                file_cfg, model_fields, train_fields, f"--config {args.config}"
            )
            model_over.update(m)
            train_over.update(t)
            data_over.update(d)
    for flag in ("steps", "batch_size", "lr", "seed", "device", "dtype"):
        value = getattr(args, flag)
        if value is not None:
            train_over[flag] = value
    if args.no_progress:
        train_over["progress"] = False
    m, t, d = _split_overrides(parse_set(args.set), model_fields, train_fields, "--set")
    model_over.update(m)
    train_over.update(t)
    data_over.update(d)

    run = RunDir(out)
    if args.override and not args.resume:
        raise ValueError("--override only applies with --resume")
    bad = sorted(set(args.override) - train_fields)
    if bad:
        raise ValueError(f"--override {bad[0]}: not a train config field")
    if args.resume:
        # A resumed run restores what it recorded; fit refuses any explicit value that
        # differs from it (only --steps may change, to extend the run); it also refuses a
        # directory that holds no run. Here: the recorded model and data set must match
        # before their recorded configs are merged in.
        prev = run.read_config() if run.config_path.exists() else {}
        if prev and prev.get("model") != spec.name:
            raise ValueError(
                f"--resume: {out} holds a run of model {prev.get('model')!r}, not {spec.name!r}"
            )
        if prev and prev.get("data") != data_name:
            raise ValueError(
                f"--resume: {out} was trained on {prev.get('data')!r}, not {data_name!r}"
            )
        model_over = {**prev.get("model_config", {}), **model_over}
        train_over = {**prev.get("train_config", {}), **train_over}
        data_over = {**(prev.get("data_options") or {}), **data_over}

    data_info = data_mod.info(data_name, **data_over)
    if data_info.kind not in spec.data_kinds:
        raise ValueError(
            f"model {spec.name!r} takes {'/'.join(spec.data_kinds)} data; {data_name!r} is "
            f"{data_info.kind}"
        )
    if not args.resume:  # the model's budget for this data, under what the user set
        train_over = {**spec.train_defaults(data_info.kind, data_name), **train_over}
    model_cfg = spec.make_config(model_over)
    train_cfg = apply_overrides(TrainConfig(), train_over, what="train config")

    import torch

    torch.manual_seed(train_cfg.seed)  # the weights' initialisation
    model = spec.build(model_cfg, data_info)
    dataset = data_mod.load(data_name, "train", **data_over)
    if spec.task == "classifier":  # a classifier trains on (x, y)
        dataset = dataset.labelled()
    run_info = {
        "model": spec.name,
        "task": spec.task,
        "data": data_name,
        "data_options": data_info.options,
        "model_config": to_json_dict(model_cfg),
        "data_info": data_info.to_json(),
    }
    if args.resume and prev.get("model_config") is not None:
        # a run recorded before a config field existed (its upgrade_fields fills it in) is
        # the same model: keep the recorded form, so the resume's check compares like with like
        if spec.make_config(prev["model_config"]) == model_cfg:
            run_info["model_config"] = prev["model_config"]
    from .train import distributed

    try:
        result = fit(
            model,
            dataset,
            train_cfg,
            out=out,
            resume=args.resume,
            run_info=run_info,
            overrides=tuple(args.override),
        )
    except ConfigError:
        raise
    finally:
        rank, _ = distributed.world()
        distributed.shutdown()
    if rank != 0:  # under torchrun, rank 0 alone reports
        return 0
    if result.already_finished:
        print(
            f"{out} already holds the finished run ({result.steps} steps); nothing to do "
            "(pass a larger --steps to extend it)"
        )
        return 0
    print(f"trained {spec.name} on {data_name} for {result.steps} steps; run directory: {out}")
    if (out / "samples.png").exists():
        print(f"  samples picture: {out / 'samples.png'}")
    print(f"  training metrics: {out / 'metrics.jsonl'}   loss curve: {out / 'loss.png'}")
    print(f"  weights: {out / 'model.safetensors'}; evaluate with: genmodels evaluate {out}")
    return 0


def _cmd_sample(args) -> int:
    import numpy as np
    import torch

    from .train.checkpoint import load_run
    from .train.device import resolve_device

    out = Path(args.out)
    if out.suffix not in (".npy", ".png"):
        raise ValueError(f"--out {out}: expected a .npy or .png file name")
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    _check_seed(args.seed)
    if args.variable is not None:
        from .models.samplers import check_variable

        check_variable(args.variable)
        if args.sampler != "ode":
            raise ValueError(
                "--variable is the probability flow ODE's integration variable: use it with "
                "--sampler ode"
            )
    _check_snr_arg(args)
    _check_writable(out, "--out")  # before sampling, not after
    model = load_run(args.run_dir, device=args.device)
    if model.task != "density":
        raise ValueError(
            f"model {model.run_config.get('model')!r} is a {model.task} model: it does not sample"
        )
    bad = [
        k for k, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()
    ]
    if bad:
        raise ValueError(f"{args.run_dir}: the weights hold NaN or inf ({bad[0]}); nothing sampled")
    opts = {}
    if args.sampler:
        opts["sampler"] = args.sampler
    if args.steps is not None:
        opts["steps"] = args.steps
    if args.variable is not None:
        opts["variable"] = args.variable
    if args.snr is not None:
        opts["snr"] = args.snr
    g = torch.Generator(device=resolve_device(args.device)).manual_seed(args.seed)
    x = model.sample(args.n, generator=g, **opts).detach().cpu()
    if not torch.isfinite(x).all():
        raise ValueError(
            f"{args.run_dir}: the model produced non-finite samples (do its weights hold NaN or "
            "inf?); nothing was written"
        )
    if out.suffix == ".npy":
        np.save(out, x.numpy())
    else:
        from . import data as data_mod
        from .plot import image_grid, scatter_samples

        if x.dim() == 4:
            image_grid(x[:256], out, title=f"{args.n} samples")
        else:
            opts = model.run_config.get("data_options") or {}
            ref = data_mod.load(model.run_config["data"], "test", **opts).x[: args.n]
            scatter_samples(x, ref, out, title=f"{args.sampler or 'default'} samples")
    print(f"wrote {args.n} samples to {out}")
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluate import evaluate_run

    _check_seed(args.seed)
    _check_snr_arg(args)
    if Path(args.run_dir).is_dir():  # metrics.json goes there: check before the work
        _check_writable(Path(args.run_dir) / "metrics.json", "run directory")

    m = evaluate_run(
        args.run_dir,
        n=args.n,
        seed=args.seed,
        sampler=args.sampler,
        steps=args.steps,
        device=args.device,
        bound_n=args.bound_n,
        variable=args.variable,
        snr=args.snr,
    )
    for k, v in m.items():
        print(f"{k:>24}: {v:.6g}" if isinstance(v, float) else f"{k:>24}: {v}")
    print(f"wrote {Path(args.run_dir) / 'metrics.json'}")
    return 0


def _parse_sections(text: str) -> list[int]:
    from .registry import SECTIONS

    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) not in SECTIONS:
            raise ValueError(
                f"--sections {text}: expected comma-separated lecture sections among "
                f"{', '.join(map(str, sorted(SECTIONS)))}, got {part!r}"
            )
        out.append(int(part))
    return out


def _cmd_tour(args) -> int:
    import importlib.util

    from .tour import run_tour

    sections = _parse_sections(args.sections) if args.sections else None
    out = Path(args.out)
    try:
        results = run_tour(
            out,
            budget=args.budget,
            sections=sections,
            device=args.device,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            f"genmodels: tour interrupted; run the same command again to continue it (finished "
            f"runs in {out / 'runs'} are kept)",
            file=sys.stderr,
        )
        return 130
    entries = results["entries"]
    failed = [e for e in entries if e["status"] != "ok"]
    print(
        f"tour ({results['budget']}): {len(entries) - len(failed)} of {len(entries)} runs ok "
        f"in {results['total_s']:.0f} s; results: {out / 'results.json'}"
    )
    for e in failed:
        print(f"  failed: {e['model']} on {e['data']}: {(e['error'] or '').splitlines()[0]}")
    if importlib.util.find_spec("genmodels.tour.page") is not None:  # the report page
        from .tour import page

        print(f"  page: {page.render(out)}")
    return 1 if failed else 0


def _cmd_bench(args) -> int:
    from .bench import MissingPeerError
    from .bench import main as bench_main

    try:
        return bench_main(args)
    except MissingPeerError as e:
        print(f"genmodels: error: {e}", file=sys.stderr)
        return 2


def _is_allocation_failure(e: RuntimeError) -> bool:
    import torch

    if isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(e).lower()
    return any(k in text for k in ("can't allocate memory", "out of memory", "not enough memory"))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``genmodels`` command; returns the exit code."""
    from .train.checkpoint import CheckpointError
    from .train.loop import NonFiniteLossError

    args = _parser().parse_args(argv)
    handlers = {
        "list": _cmd_list,
        "train": _cmd_train,
        "sample": _cmd_sample,
        "evaluate": _cmd_evaluate,
        "tour": _cmd_tour,
        "bench": _cmd_bench,
    }
    try:
        return handlers[args.command](args)
    except NonFiniteLossError as e:
        print(f"genmodels: training stopped: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, CheckpointError, OSError, FloatingPointError) as e:
        if isinstance(e, OSError) and e.filename is not None:
            msg = f"{e.filename}: {e.strerror or type(e).__name__}"
        else:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank fails alike: one line
            print(f"genmodels: error: {msg}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if not _is_allocation_failure(e):
            raise
        if os.environ.get("RANK", "0") == "0":
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(
                f"genmodels: error: out of memory ({first[:160]}); use a smaller --batch-size, "
                "--n or model (--set width=...)",
                file=sys.stderr,
            )
        return 2
    except KeyboardInterrupt:
        print("genmodels: interrupted (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
