"""Time-series benchmarks (issue 14): spline coefficients, Neural CDE, latent ODE (CPU, 1 thread).

    PYTHONPATH=src python benchmarks/series.py coeffs        # NaN-aware spline coefficients
                                                           # vs torchcde (1000 x 3 x 100, 50% NaN)
    PYTHONPATH=src python benchmarks/series.py cde --model neural-cde --noise 0.3 --drop 0.5
    PYTHONPATH=src python benchmarks/series.py latent-ode --n-obs 30 --seeds 0 1 2
    PYTHONPATH=src python benchmarks/series.py latent-ode --model gru-seq2seq --n-obs 30
    PYTHONPATH=src python benchmarks/series.py cde-step      # one training step vs torchcde
    PYTHONPATH=src python benchmarks/series.py latent-ode-step   # ... vs torchdiffeq; phases
    PYTHONPATH=src python benchmarks/series.py pictures      # docs/figures/series_*.png

``cde`` and ``latent-ode`` train the registered model with its registered budget (240 steps of
32 / 1500 steps of 128, the model's learning rate, gradient clipping at 1.0) unless ``--steps``
says otherwise, and evaluate it as ``genmodels evaluate`` does (accuracy / RMSE).

Each part prints one table; docs/series.md holds the numbers and the commands.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from genmodels.integrate import natural_cubic_coeffs


def _time(fn, repeats: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_coeffs(args) -> None:
    """``natural_cubic_coeffs`` vs ``torchcde.natural_cubic_coeffs`` on the issue's workload:
    1000 series x 3 channels x 100 points, each value NaN with probability 0.5, float32."""
    import torchcde

    g = torch.Generator().manual_seed(0)
    n, length, c = args.series, 100, 3
    x = torch.randn(n, length, c, generator=g)
    x[torch.rand(x.shape, generator=g) < 0.5] = float("nan")
    t = torch.linspace(0.0, 4 * torch.pi, length)
    ours_s, ours = _time(lambda: natural_cubic_coeffs(t, x), 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_s, ref = _time(lambda: torchcde.natural_cubic_coeffs(x, t), 1)
    a, b, two_c, three_d = ref.chunk(4, -1)
    diff = max(
        float((m - r).abs().max() / r.abs().max())
        for m, r in zip(ours, (a, b, two_c / 2, three_d / 3))
    )
    print(
        f"| {n} x {c} x {length}, 50% NaN | genmodels {ours_s:.3f} s | torchcde {ref_s:.2f} s "
        f"| speed-up {ref_s / ours_s:.0f}x | max |diff| / max |coef| {diff:.1e} (float32) |"
    )
    return {"ours_s": ours_s, "peer_s": ref_s, "diff": diff}


def _interleaved_steps(ours, our_loss, theirs, their_loss, batches, args):
    """Thread CPU times of training steps (loss, backward, clipping at 1.0, Adam) of two
    models on the same batches, alternating which goes first."""

    def step(model, opt, loss_fn, batch):
        opt.zero_grad(set_to_none=True)
        loss_fn(batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    runs = [
        (ours, torch.optim.Adam(ours.parameters(), lr=args.lr), our_loss, []),
        (theirs, torch.optim.Adam(theirs.parameters(), lr=args.lr), their_loss, []),
    ]
    for k in range(args.repeats):
        batch = batches[k % len(batches)]
        for model, opt, loss_fn, times in runs if k % 2 == 0 else runs[::-1]:
            t0 = time.thread_time()
            step(model, opt, loss_fn, batch)
            times.append(time.thread_time() - t0)
    return runs[0][3], runs[1][3]


def bench_cde_step(args) -> None:
    """One Neural CDE training step (batch 32 of ``spiral-chirality``, noise 0.3, drop 0.5:
    loss, backward, clipping, Adam) against torchcde's with the same field, hidden size,
    natural cubic spline and solver (rk4, one step per knot: ``grid_constructor`` = the
    knots), interleaved in one process, thread CPU time, one thread.

    torchcde's spline coefficients are computed before the timing (torchcde's own examples
    compute them once for the data set; its NaN path takes seconds per batch) from ours,
    converted to its ``[a, b, 2c, 3d]`` layout (the two agree to round-off:
    tests/integrate/test_spline.py); ours are computed inside every step, from the NaN-coded
    batch, and still counted. ``--intensity``: both models with the observational intensity
    channels (torchcde's precomputed with its coefficients, ours in every step)."""
    import torchcde

    from genmodels import data
    from genmodels.models.neural_cde import NeuralCDE

    tr = data.load("spiral-chirality", noise=0.3, drop=0.5)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.batches):
        idx = torch.randperm(tr.x.shape[0], generator=g)[: args.batch_size]
        x, y = tr.x[idx], tr.y[idx]
        knots = x[0, :, 0].contiguous()
        xc = x
        if args.intensity:  # torchcde's input gets the same count channels, precomputed
            seen = (~torch.isnan(x[..., 1:])).to(x.dtype).cumsum(1) / x.shape[1]
            xc = torch.cat([x, seen], -1)
        a, b, c, d = natural_cubic_coeffs(knots, xc)
        batches.append((x, y, knots, torch.cat([a, b, 2 * c, 3 * d], -1)))

    torch.manual_seed(0)
    ours = NeuralCDE(2, args.hidden, 2, width=args.width, intensity=args.intensity)
    theirs = NeuralCDE(2, args.hidden, 2, width=args.width, intensity=args.intensity)
    theirs.load_state_dict(ours.state_dict())

    def their_logits(coeffs, knots):
        X = torchcde.CubicSpline(coeffs, t=knots)
        z0 = theirs.initial(X.evaluate(knots[0]))
        grid = knots.tolist()
        z = torchcde.cdeint(
            X, theirs.field, z0, X.interval, method="rk4", adjoint=False,
            options={"grid_constructor": lambda f, y0, t: torch.tensor(grid)},
        )  # fmt: skip
        return theirs.readout(z[:, -1])

    # same outputs at the same weights (before any step)
    x, y, knots, coeffs = batches[0]
    with torch.no_grad():
        diff = float((ours.logits(x) - their_logits(coeffs, knots)).abs().max())

    def our_loss(batch):
        return ours.loss(batch[:2])

    def their_loss(batch):
        x, y, knots, coeffs = batch
        return torch.nn.functional.cross_entropy(their_logits(coeffs, knots), y)

    t_ours, t_theirs = _interleaved_steps(ours, our_loss, theirs, their_loss, batches, args)
    mo, mt = statistics.median(t_ours[2:]), statistics.median(t_theirs[2:])
    print(
        f"| batch {args.batch_size}, hidden {args.hidden}, width {args.width}, 100 knots, rk4, "
        f"intensity {args.intensity} "
        f"| genmodels {mo * 1e3:.1f} ms | torchcde {mt * 1e3:.1f} ms | ratio {mo / mt:.2f} "
        f"| max |logit diff| {diff:.1e} |"
    )
    return {"ours_s": mo, "peer_s": mt, "diff": diff}


def bench_latent_ode_step(args) -> None:
    """One latent ODE training step (batch 128 of ``spirals``, n_obs 30: loss, backward,
    clipping, Adam) against the same model whose latent solve is torchdiffeq's ``odeint``
    (rk4 on the same grid: the sorted union of the batch's times, ``grid_constructor``;
    encoder, decoder and ELBO shared), interleaved in one process, thread CPU time, one
    thread. Then where our step's time goes (encoder, solve, decoder + ELBO, backward,
    optimiser), from the same kind of clock."""
    import torchdiffeq

    from genmodels import data
    from genmodels.models.latent_ode import LatentODE

    class TorchdiffeqLatentODE(LatentODE):
        def trajectory(self, z0, times):
            t = times[..., 0]
            union, where = torch.unique(t.detach(), sorted=True, return_inverse=True)
            if float(union[0]) < self.t0:
                raise ValueError("the peer solves forwards only")
            grid = torch.cat([union.new_tensor([self.t0]), union[union > self.t0]])
            zs = torchdiffeq.odeint(
                self.field, z0, grid, method="rk4",
                options={"grid_constructor": lambda f, y0, tt: grid},
            )  # fmt: skip
            zs = zs[-union.shape[0] :].movedim(0, -2)  # (..., B, U, L)
            idx = where.view(*([1] * (zs.dim() - 3)), *where.shape, 1)
            return zs.gather(-2, idx.expand(*zs.shape[:-3], *where.shape, zs.shape[-1]))

    tr = data.load("spirals", n_obs=args.n_obs)
    g = torch.Generator().manual_seed(0)
    batches = [tr.batch(args.batch_size, g) for _ in range(args.batches)]
    torch.manual_seed(0)
    ours = LatentODE(2)
    theirs = TorchdiffeqLatentODE(2)
    theirs.load_state_dict(ours.state_dict())
    gen = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)]
    with torch.no_grad():
        diff = float((ours.loss(batches[0], generator=gen[0])
                      - theirs.loss(batches[0], generator=gen[1])).abs())  # fmt: skip
    t_ours, t_theirs = _interleaved_steps(
        ours, lambda b: ours.loss(b), theirs, lambda b: theirs.loss(b), batches, args
    )
    mo, mt = statistics.median(t_ours[2:]), statistics.median(t_theirs[2:])
    print(
        f"| batch {args.batch_size}, n_obs {args.n_obs}, rk4 on the union of times "
        f"| genmodels {mo * 1e3:.1f} ms | torchdiffeq {mt * 1e3:.1f} ms | ratio {mo / mt:.2f} "
        f"| |loss diff| {diff:.1e} |"
    )
    result = {"ours_s": mo, "peer_s": mt, "diff": diff}
    if not getattr(args, "phases", True):
        return result
    # where our step's time goes
    from genmodels.models.latent_ode import split_series

    model, opt = ours, torch.optim.Adam(ours.parameters(), lr=args.lr)
    phases = {k: [] for k in ("batching", "encoder", "solve", "decoder+elbo", "backward", "adam")}
    clock = [0.0]

    def lap(name):
        clock.append(time.thread_time())
        phases[name].append(clock[-1] - clock[-2])

    for _ in range(args.repeats):
        clock.append(time.thread_time())
        batch = tr.batch(args.batch_size, g)
        lap("batching")
        times, values, mask = split_series(batch, 2)
        q = model.posterior(times, values, mask)
        lap("encoder")
        z0 = q.rsample()
        zt = model.trajectory(z0, times)
        lap("solve")
        x = model.decoder(zt)
        m = mask.to(values.dtype)
        ll = (torch.distributions.Normal(x, model.obs_std).log_prob(values) * m).sum((-1, -2))
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
        loss = -(ll - kl).sum() / m.sum()
        lap("decoder+elbo")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lap("backward")
        opt.step()
        lap("adam")
    med = {k: statistics.median(v[2:]) * 1e3 for k, v in phases.items()}
    total = sum(med.values())
    print(
        "| "
        + " | ".join(f"{k} {v:.1f} ms ({100 * v / total:.0f}%)" for k, v in med.items())
        + f" | sum {total:.1f} ms |"
    )
    # the two big parts alone, forward and backward: the encoder and the latent solve
    split = {k: [] for k in ("encoder fwd", "encoder bwd", "solve fwd", "solve bwd")}
    batch = tr.batch(args.batch_size, g)
    times, values, mask = split_series(batch, 2)
    for _ in range(args.repeats):
        t0 = time.thread_time()
        q = model.posterior(times, values, mask)
        t1 = time.thread_time()
        (q.loc.sum() + q.scale.sum()).backward()
        t2 = time.thread_time()
        z0 = torch.randn(1, args.batch_size, model.latent_dim, requires_grad=True)
        t3 = time.thread_time()
        zt = model.trajectory(z0, times)
        t4 = time.thread_time()
        zt.sum().backward()
        t5 = time.thread_time()
        for k, v in zip(split, (t1 - t0, t2 - t1, t4 - t3, t5 - t4)):
            split[k].append(v)
    print("| " + " | ".join(f"{k} {statistics.median(v[2:]) * 1e3:.1f} ms"
                            for k, v in split.items()) + " |")  # fmt: skip
    return result


def _model_config(spec, sets=()):
    """The registered model config with ``KEY=VALUE`` overrides (values as JSON, else text)."""
    import json

    overrides = {}
    for item in sets:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    return spec.make_config(overrides)


def _train_eval(
    model_name: str,
    data_name: str,
    opts: dict,
    seed: int,
    steps: int | None,
    lr=None,
    sets=(),
    lr_schedule=None,
):
    from genmodels import data, registry
    from genmodels.evaluate.run import evaluate_model
    from genmodels.train import TrainConfig, fit

    tr = data.load(data_name, **opts)
    spec = registry.get(model_name)
    torch.manual_seed(seed)
    model = spec.build(_model_config(spec, sets), tr.info)
    budget = dict(model.train_defaults)
    if steps is not None:
        budget["steps"] = steps
    if lr is not None:
        budget["lr"] = lr
    if lr_schedule is not None:
        budget["lr_schedule"] = lr_schedule
    cfg = TrainConfig(**{**budget, "seed": seed, "progress": False, "grad_clip": 1.0})
    t0, c0 = time.perf_counter(), time.thread_time()
    fit(model, tr, cfg)
    fit_s, cpu_s = time.perf_counter() - t0, time.thread_time() - c0
    metrics = evaluate_model(model, data_name, task=spec.task, data_options=opts)
    metrics["fit_cpu_s"] = cpu_s
    return fit_s, metrics, cfg, model


def bench_cde(args) -> None:
    opts = dict(noise=args.noise, drop=args.drop)
    for seed in args.seeds:
        fit_s, m, cfg, model = _train_eval(
            args.model, "spiral-chirality", opts, seed, args.steps, args.lr, args.set,
            args.lr_schedule,
        )  # fmt: skip
        print(
            f"| {args.model} {' '.join(args.set)} | noise {args.noise} | drop {args.drop} "
            f"| seed {seed} | "
            f"{cfg.steps} x {cfg.batch_size}, lr {cfg.lr:g} {cfg.lr_schedule} | "
            f"acc {m['accuracy']:.3f} | "
            f"nll {m['nll_nats']:.3f} | fit {fit_s:.1f} s |",
            flush=True,
        )
        if args.diagnose:
            _diagnose_classifier(model, opts)


def _diagnose_classifier(model, opts) -> None:
    """A ``spiral-chirality`` classifier after its fit: accuracy and NLL on the 256 training
    series (against the test split's: over- or under-fitting), and for the GRU baseline where
    its decision looks: the mean |d (logit difference) / d value| over the first 200 test
    series, per fifth of the 100 time points (the spirals' amplitude decays from 1 to 0.14
    along the series, below the noise 0.3 in the last fifths)."""
    from genmodels import data
    from genmodels.models.neural_cde import GRUClassifier, _forward_fill

    tr = data.load("spiral-chirality", **opts)
    model.eval()
    with torch.no_grad():
        p = model.predict(tr.x)
    acc = float((p.probs.argmax(-1) == tr.y).float().mean())
    nll = float(-p.log_prob(tr.y).mean())
    parts = [f"train acc {acc:.3f}, train nll {nll:.3f}"]
    if isinstance(model, GRUClassifier):
        x = data.load("spiral-chirality", "test", **opts).x[:200]
        t = x[..., :1]
        dt = torch.cat([torch.zeros_like(t[:, :1]), t[:, 1:] - t[:, :-1]], 1)
        values, mask = _forward_fill(x[..., 1:])
        inp = torch.cat([values, mask, dt], -1).requires_grad_(True)
        _, h = model.gru(inp)
        logits = model.readout(h[-1])
        (logits[:, 1] - logits[:, 0]).abs().sum().backward()
        g = inp.grad[..., :2].norm(dim=-1).mean(0)  # (100,)
        fifths = " ".join(f"{float(g[i : i + 20].mean()):.3f}" for i in range(0, 100, 20))
        parts.append(f"|d logit / d value| per fifth of the series: {fifths}")
    print("|   " + " | ".join(parts) + " |", flush=True)


def bench_latent_ode(args) -> None:
    """``--model latent-ode`` or its baseline ``gru-seq2seq`` on ``spirals``: RMSE on the 500
    test series, fit time (wall and the process's thread CPU time)."""
    opts = dict(n_obs=args.n_obs)
    for seed in args.seeds:
        fit_s, m, cfg, model = _train_eval(
            args.model, "spirals", opts, seed, args.steps, args.lr, sets=args.set,
            lr_schedule=args.lr_schedule,
        )  # fmt: skip
        print(
            f"| {args.model} {' '.join(args.set)} | n_obs {args.n_obs} | seed {seed} "
            f"| {cfg.steps} x {cfg.batch_size}, lr {cfg.lr:g} {cfg.lr_schedule} "
            f"| interp {m['rmse_interp']:.3f} | extrap {m['rmse_extrap']:.3f} | "
            f"fit {fit_s:.1f} s wall, {m['fit_cpu_s']:.1f} s CPU |",
            flush=True,
        )
        if args.diagnose:
            _diagnose_spirals(model, opts)


@torch.no_grad()
def _diagnose_spirals(model, opts) -> None:
    """Where a ``spirals`` fit's extrapolation error comes from, on the 500 test series:
    per direction, the RMSE and the mean |phase error| (radians, about the spiral's centre)
    at the last grid time; the clockwise windows whose extrapolation runs past radius 6,
    beyond any observed point (the observed halves end at radius <= 5.2 on both spirals):
    their RMSE and share of the squared error, and the mean radius predicted at their last
    time against the true one; the learned observation noise; for a latent ODE, the
    posterior's KL per latent dimension (a collapsed dimension: KL near 0)."""
    import math

    from genmodels import data

    test = data.load("spirals", "test", **opts)
    model.eval()
    values = torch.where(test.mask, test.values, torch.nan)
    pred = model.predict(test.times, values, test.grid.view(-1, 1)).mean
    lab, clean = test.labels, test.clean
    centre = torch.tensor([[5.0, 0.0], [-5.0, 0.0]])[lab].unsqueeze(1)  # label 1 = clockwise
    dc, dp = clean - centre, pred - centre
    phase = torch.atan2(dp[..., 1], dp[..., 0]) - torch.atan2(dc[..., 1], dc[..., 0])
    phase = (phase + math.pi) % (2 * math.pi) - math.pi
    se = ((pred - clean) ** 2)[:, 100:].mean((1, 2))  # per series, extrapolation
    parts = []
    for c, name in ((0, "ccw"), (1, "cw")):
        s = lab == c
        parts.append(
            f"{name} extrap {float(se[s].mean().sqrt()):.3f}, "
            f"|phase err| at end {float(phase[s, -1].abs().mean()):.2f} rad"
        )
    far = (lab == 1) & (dc[:, -1].norm(dim=-1) > 6)
    r_pred, r_true = (float(d[far, -1].norm(dim=-1).mean()) for d in (dp, dc))
    parts.append(
        f"{int(far.sum())} cw windows past r 6: extrap {float(se[far].mean().sqrt()):.3f} "
        f"({float(se[far].sum() / se.sum()):.0%} of the SE), r at end {r_pred:.1f} "
        f"(true {r_true:.1f}); the rest {float(se[~far].mean().sqrt()):.3f}"
    )
    parts.append(f"obs_std {float(model.obs_std):.3f}")
    if hasattr(model, "posterior"):
        from genmodels.models.latent_ode import split_series

        q = model.posterior(*split_series((test.times, values), model.obs_dim))
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean(0)
        parts.append("KL per dim " + " ".join(f"{float(k):.2f}" for k in kl))
    print("|   " + " | ".join(parts) + " |", flush=True)


def _train_eval_model(model_name, data_name, opts, seed, steps, lr=None):
    """As :func:`_train_eval`, returning the trained model too (the fit's thread CPU time in
    the metrics as ``fit_cpu_s``)."""
    from genmodels import data, registry
    from genmodels.evaluate.run import evaluate_model
    from genmodels.train import TrainConfig, fit

    tr = data.load(data_name, **opts)
    spec = registry.get(model_name)
    torch.manual_seed(seed)
    model = spec.build(spec.make_config(), tr.info)
    budget = dict(model.train_defaults)
    budget.update({k: v for k, v in (("steps", steps), ("lr", lr)) if v is not None})
    cfg = TrainConfig(**{**budget, "seed": seed, "progress": False, "grad_clip": 1.0})
    c0 = time.thread_time()
    fit(model, tr, cfg)
    cpu_s = time.thread_time() - c0
    metrics = evaluate_model(model, data_name, task=spec.task, data_options=opts)
    return model, {**metrics, "fit_cpu_s": cpu_s}, cfg


def bench_pictures(args) -> None:
    """docs/figures/series_spirals.png (the latent ODE's and, below it, the GRU seq2seq's
    reconstruction and extrapolation of the first counter-clockwise and the first clockwise
    test spiral, each trained at seed 0 with its registered budget) and
    docs/figures/series_drop.png (test accuracy of the Neural CDE and the GRU baseline
    against the fraction of dropped points, noise 0.3, registered budgets)."""
    from pathlib import Path

    from genmodels import data
    from genmodels.plot.series import accuracy_vs_dropped, spiral_extrapolations

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "spirals" in args.which:
        opts = dict(n_obs=args.n_obs)
        test = data.load("spirals", "test", **opts)
        rows = [int((test.labels == c).nonzero()[0]) for c in (0, 1)]
        values = test.values[rows].masked_fill(~test.mask[rows], float("nan"))
        means = {}
        for name in ("latent-ode", "gru-seq2seq"):
            model, m, cfg = _train_eval_model(name, "spirals", opts, 0, args.steps)
            print(
                f"| {name} | n_obs {args.n_obs} | seed 0 | {cfg.steps} x {cfg.batch_size} | "
                f"interp {m['rmse_interp']:.3f} | extrap {m['rmse_extrap']:.3f} | "
                f"fit {m['fit_cpu_s']:.1f} s CPU |",
                flush=True,
            )
            with torch.no_grad():
                mean = model.predict(test.times[rows], values, test.grid.view(-1, 1)).mean
            means[f"{name} (extrap RMSE {m['rmse_extrap']:.2f})"] = mean
        spiral_extrapolations(
            test.times[rows], values, test.grid, test.clean[rows], means,
            titles=["counter-clockwise", "clockwise"], path=out / "series_spirals.png",
        )  # fmt: skip
    if "drop" in args.which:
        accs = {}
        for name in ("neural-cde", "gru-classifier"):
            accs[name] = []
            for drop in args.drops:
                row = []
                for seed in args.seeds:
                    opts = dict(noise=0.3, drop=drop)
                    _, m, cfg = _train_eval_model(name, "spiral-chirality", opts, seed, None)
                    row.append(m["accuracy"])
                    print(
                        f"| {name} | noise 0.3 | drop {drop} | seed {seed} | "
                        f"{cfg.steps} x {cfg.batch_size}, lr {cfg.lr:g} | acc {row[-1]:.3f} |",
                        flush=True,
                    )
                accs[name].append(row)
        accuracy_vs_dropped(args.drops, accs, path=out / "series_drop.png")


def rows(quick: bool, tiny: bool = False) -> list[dict]:
    """``genmodels bench`` rows: the NaN-aware spline coefficients and one Neural CDE training
    step against torchcde, one latent ODE training step against the same model solved by
    torchdiffeq (thread CPU time, interleaved, one thread). Targets (#14): the Neural CDE step at
    most torchcde's, the latent ODE step at most 0.7x."""
    from argparse import Namespace

    from genmodels.bench import peer_version, row

    torch.set_num_threads(1)
    series = 20 if tiny else 100 if quick else 1000
    repeats = 4 if tiny else 8 if quick else 12
    out = []
    c = bench_coeffs(Namespace(series=series))
    out.append(
        row(
            "series",
            f"natural_cubic_coeffs {series} x 3 x 100, 50% NaN",
            c["ours_s"],
            c["peer_s"],
            peer_version("torchcde"),
            limit=1.0,
            note=f"wall time; #14's target: at most 1 s for 1000 series; "
            f"max rel diff {c['diff']:.0e}",
        )
    )
    c = bench_cde_step(
        Namespace(
            batch_size=8 if tiny else 32,
            hidden=16,
            width=64,
            batches=2 if tiny else 4,
            repeats=repeats,
            lr=3e-3,
            intensity=True,  # the registered default
        )
    )
    out.append(
        row(
            "series",
            "Neural CDE training step (rk4 per knot)",
            c["ours_s"] * 1e3,
            c["peer_s"] * 1e3,
            peer_version("torchcde"),
            unit="ms",
            limit=1.0,
            note=f"max logit diff {c['diff']:.0e}; target #14",
        )
    )
    c = bench_latent_ode_step(
        Namespace(
            batch_size=16 if tiny else 128,
            n_obs=30,
            batches=2 if tiny else 4,
            repeats=repeats,
            lr=1e-2,
            phases=False,
        )
    )
    out.append(
        row(
            "series",
            "latent ODE training step (rk4 on the union of times)",
            c["ours_s"] * 1e3,
            c["peer_s"] * 1e3,
            peer_version("torchdiffeq"),
            unit="ms",
            limit=0.7,
            note=f"loss diff {c['diff']:.0e}; target #14",
        )
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    c = sub.add_parser("coeffs")
    c.add_argument("--series", type=int, default=1000)
    c = sub.add_parser("cde")
    c.add_argument("--model", default="neural-cde")
    c.add_argument("--noise", type=float, default=0.3)
    c.add_argument("--drop", type=float, default=0.5)
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    c.add_argument("--steps", type=int, default=None)
    c.add_argument("--lr", type=float, default=None)
    c.add_argument("--set", nargs="*", default=[], help="model config KEY=VALUE")
    c.add_argument("--lr-schedule", default=None, help="constant or cosine")
    c.add_argument("--diagnose", action="store_true", help="training accuracy; GRU saliency")
    c = sub.add_parser("cde-step")
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--hidden", type=int, default=16)
    c.add_argument("--width", type=int, default=64)
    c.add_argument("--batches", type=int, default=4)
    c.add_argument("--repeats", type=int, default=12)
    c.add_argument("--lr", type=float, default=3e-3)
    c.add_argument("--intensity", action="store_true", help="observational intensity channels")
    c = sub.add_parser("latent-ode-step")
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--n-obs", type=int, default=30)
    c.add_argument("--batches", type=int, default=4)
    c.add_argument("--repeats", type=int, default=12)
    c.add_argument("--lr", type=float, default=1e-2)
    c = sub.add_parser("pictures")
    c.add_argument("--which", nargs="+", default=["spirals", "drop"])
    c.add_argument("--out", default="docs/figures")
    c.add_argument("--n-obs", type=int, default=30)
    c.add_argument("--steps", type=int, default=None)
    c.add_argument("--drops", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7])
    c.add_argument("--seeds", type=int, nargs="+", default=[0])
    c = sub.add_parser("latent-ode")
    c.add_argument("--model", default="latent-ode", help="latent-ode or gru-seq2seq")
    c.add_argument("--n-obs", type=int, default=30)
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    c.add_argument("--steps", type=int, default=None)
    c.add_argument("--set", nargs="*", default=[], help="model config KEY=VALUE")
    c.add_argument("--lr", type=float, default=None, help="default: the model's")
    c.add_argument("--lr-schedule", default=None, help="constant or cosine (default: the budget's)")
    c.add_argument(
        "--diagnose", action="store_true", help="where the extrapolation error comes from"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    parts = {
        "coeffs": bench_coeffs,
        "cde": bench_cde,
        "cde-step": bench_cde_step,
        "latent-ode": bench_latent_ode,
        "latent-ode-step": bench_latent_ode_step,
        "pictures": bench_pictures,
    }
    parts[args.part](args)


if __name__ == "__main__":
    main()
