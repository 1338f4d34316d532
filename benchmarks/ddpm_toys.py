"""DDPM on the 2D toys, against a diffusers baseline in the same run.

Both sides use the identical network (TimeMLP: 3x128 SiLU, 128-d sinusoidal
embedding), the same initial weights, the same data stream and noise (batch
indices and (t, ε) drawn from generators seeded by the run seed and the step),
T = 1000 linear β (1e-4..0.02), Adam 1e-3, batch 1024, EMA 0.995 every step.
The baseline trains with ``DDPMScheduler.add_noise`` and samples with
``DDPMScheduler.step`` (1000 steps, β̃ variance) and ``DDIMScheduler.step``
(50 steps, η = 0, leading spacing, final ᾱ = 1).

Reported per toy: MMD², energy distance and sliced W1 of 10k samples against
the test split for DDPM-1000 and DDIM-50 with their floors (10k real training
points against the test split); training seconds per 1k steps; sampling time
for 10k samples. Speed rows: the loop's own overhead (``fit`` minus a bare
PyTorch loop over the same batches), sampling at batch 64 against diffusers,
and at batch 10,000 against the network evaluations alone.

    python benchmarks/ddpm_toys.py                 # every toy, the full budget
    python benchmarks/ddpm_toys.py --quick         # 2 toys, 1000 steps, 2k samples
    python benchmarks/ddpm_toys.py --toys moons --steps 5000
    python benchmarks/ddpm_toys.py --speed-only    # only the sampling-speed rows (untrained net)

``--speed-only`` times the sampling rows with the untrained network (a network's cost does
not depend on its weights), skipping training and the quality table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from genmodels import data
from genmodels.data.toys import TOYS as TOY_GENERATORS
from genmodels.evaluate import sample_metrics
from genmodels.models.ddpm import DDPM, NoiseSchedule, ancestral, ddim
from genmodels.nn import TimeMLP
from genmodels.train import TrainConfig, fit, step_generator

TOYS = list(TOY_GENERATORS)  # the 8 FFJORD toys, in the data module's order
T = 1000


def make_net(seed: int) -> TimeMLP:
    torch.manual_seed(seed)
    return TimeMLP(2, 128, 3, 128)


def ema_update(shadow, params, decay):
    torch._foreach_lerp_(shadow, [p.detach() for p in params], 1 - decay)


def train_ours(toy, steps, seed, batch):
    net = make_net(seed)
    model = DDPM(net, (2,), NoiseSchedule.linear(T))
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=1e-3,
        ema_decay=0.995,
        seed=seed,
        progress=False,
        device="cpu",
    )
    t0 = time.perf_counter()
    fit(model, data.load(toy), cfg)
    return model, time.perf_counter() - t0


def train_bare(toy, steps, seed, batch):
    """The same math as fit's step with nothing around it: the floor for loop overhead."""
    net = make_net(seed)
    model = DDPM(net, (2,), NoiseSchedule.linear(T))
    x = data.load(toy).x
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = list(model.parameters())
    shadow = [p.detach().clone() for p in params]
    gi, gn = torch.Generator(), torch.Generator()
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=step_generator(gi, seed, step, 0))
        loss = model.loss(x[idx], generator=step_generator(gn, seed, step, 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(shadow, params, 0.995)
    return time.perf_counter() - t0


def train_diffusers(toy, steps, seed, batch, sched):
    net = make_net(seed)
    x = data.load(toy).x
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    params = list(net.parameters())
    shadow = [p.detach().clone() for p in params]
    gi, gn = torch.Generator(), torch.Generator()
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=step_generator(gi, seed, step, 0))
        x0 = x[idx]
        g = step_generator(gn, seed, step, 1)
        t = torch.randint(0, T, (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        loss = F.mse_loss(net(sched.add_noise(x0, noise, t), t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(shadow, params, 0.995)
    with torch.no_grad():
        for p, s in zip(params, shadow):
            p.copy_(s)
    return net.eval(), time.perf_counter() - t0


@torch.inference_mode()
def sample_diffusers(net, sched, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    for t in sched.timesteps:
        x = sched.step(net(x, t.expand(n)), t, x, generator=g).prev_sample
    return x


def sample_ours(model, n, seed, sampler):
    g = torch.Generator().manual_seed(seed)
    s = NoiseSchedule.linear(T)
    x = torch.randn(n, 2, generator=g)
    if sampler == "ancestral":
        return ancestral(model.eps_model, x, s, generator=g)
    return ddim(model.eps_model, x, s, steps=50, generator=g)


def timed(fn, repeats=1):
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


@torch.inference_mode()
def net_only(net, n, evals):
    x = torch.randn(n, 2)
    t0 = time.perf_counter()
    for i in reversed(range(evals)):
        net(x, torch.full((1,), i).expand(n))
    return time.perf_counter() - t0


def schedulers():
    """diffusers' DDPM (1000 steps, β̃ variance) and DDIM (50 steps) schedulers of our schedule."""
    import diffusers

    sched = diffusers.DDPMScheduler(
        num_train_timesteps=T,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        variance_type="fixed_small",
        clip_sample=False,
    )
    sched.set_timesteps(T)
    dsched = diffusers.DDIMScheduler.from_config(sched.config, clip_sample=False)
    dsched.set_timesteps(50)
    return sched, dsched


def rows(quick: bool, tiny: bool = False) -> list[dict]:
    """``genmodels bench`` rows: sampling a batch of 64 with DDPM-1000 and DDIM-50, ours against
    diffusers' schedulers driving the same (untrained: the cost does not depend on the weights)
    TimeMLP 3x128, interleaved pairs, thread CPU time, one thread. Target (#2): DDPM-1000 at
    most 0.6x diffusers' time; DDIM-50: not slower. Then training steps: ``fit`` against a
    plain loop over the same batches with diffusers' ``add_noise`` (#2: overhead under 10%)."""
    from genmodels.bench import peer_version, row

    torch.set_num_threads(1)
    sched, dsched = schedulers()
    ours = DDPM(make_net(0), (2,), NoiseSchedule.linear(T))
    net = ours.eps_model.eval()
    peer, pairs, out = peer_version("diffusers"), 1 if tiny else 5 if quick else 9, []
    for label, sampler, peer_sched, limit in (
        ("DDPM-1000", "ancestral", sched, 0.6),
        ("DDIM-50", "ddim", dsched, 1.0),
    ):
        fns = (
            lambda sampler=sampler: sample_ours(ours, 64, 1, sampler),
            lambda peer_sched=peer_sched: sample_diffusers(net, peer_sched, 64, 1),
        )
        for fn in fns:
            fn()  # warm-up
        times = ([], [])
        for r in range(pairs):
            for k in (0, 1) if r % 2 == 0 else (1, 0):
                t0 = time.thread_time()
                fns[k]()
                times[k].append(time.thread_time() - t0)
        out.append(
            row(
                "ddpm",
                f"sampling batch 64, {label}",
                statistics.median(times[0]),
                statistics.median(times[1]),
                f"{peer} {type(peer_sched).__name__}",
                limit=limit,
                note="target #2" if limit < 1 else "not slower",
            )
        )
    if tiny:
        return out
    # Training: `fit` (EMA, clipping, batching from the step's generators) against a loop
    # with diffusers' `DDPMScheduler.add_noise` over the same batches and noise.
    steps = 200 if quick else 1000
    times = ([], [])
    for r in range(2 if quick else 3):
        for k in (0, 1) if r % 2 == 0 else (1, 0):
            t0 = time.thread_time()
            if k == 0:
                train_ours("moons", steps, 0, 1024)
            else:
                train_diffusers("moons", steps, 0, 1024, sched)
            times[k].append(time.thread_time() - t0)
    out.append(
        row(
            "ddpm",
            f"training {steps} steps, moons, batch 1024 (fit vs a diffusers loop)",
            statistics.median(times[0]),
            statistics.median(times[1]),
            f"{peer} DDPMScheduler.add_noise",
            limit=1.1,
            note="#2: the loop's overhead under 10%",
        )
    )
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--toys", nargs="+", default=TOYS)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--n-eval", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="2 toys, 1000 steps, 2000 samples")
    p.add_argument("--skip-bare", action="store_true", help="skip the loop-overhead baseline")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--speed-only", action="store_true", help="only the sampling-speed rows")
    p.add_argument("--big-repeats", type=int, default=1, help="repeats of the batch-n_eval row")
    a = p.parse_args()
    if a.quick:
        a.toys, a.steps, a.n_eval = (
            a.toys[:2] if a.toys != TOYS else ["moons", "8gaussians"],
            1000,
            2000,
        )
    torch.set_num_threads(a.threads)
    sched, dsched = schedulers()
    rows, results = [], {}
    if a.speed_only:
        a.toys = []
        ours = DDPM(make_net(a.seed), (2,), NoiseSchedule.linear(T))
    for toy in a.toys:
        test = data.load(toy, "test")
        train = data.load(toy)
        floor_x = train.x[
            torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[: a.n_eval]
        ]
        ours, t_ours = train_ours(toy, a.steps, a.seed, a.batch)
        dnet, t_diff = train_diffusers(toy, a.steps, a.seed, a.batch, sched)
        t_bare = None if a.skip_bare else train_bare(toy, a.steps, a.seed, a.batch)
        res = {
            "train_s_per_1k": {
                "ours": 1000 * t_ours / a.steps,
                "diffusers": 1000 * t_diff / a.steps,
            }
        }
        if t_bare is not None:
            res["train_s_per_1k"]["bare"] = 1000 * t_bare / a.steps
            res["loop_overhead"] = (t_ours - t_bare) / t_ours
        for name, fn, args in (
            ("ours-ddpm1000", sample_ours, (ours, a.n_eval, 7, "ancestral")),
            ("ours-ddim50", sample_ours, (ours, a.n_eval, 7, "ddim")),
            ("diffusers-ddpm1000", sample_diffusers, (dnet, sched, a.n_eval, 7)),
            ("diffusers-ddim50", sample_diffusers, (dnet, dsched, a.n_eval, 7)),
        ):
            s, secs = timed(lambda fn=fn, args=args: fn(*args))
            m = sample_metrics(s, test.x, floor_x)
            m["sample_s"] = secs
            res[name] = m
        results[toy] = res
        f = res["ours-ddpm1000"]
        rows.append(
            f"| {toy} | {res['ours-ddpm1000']['swd']:.4f} | {res['diffusers-ddpm1000']['swd']:.4f} "
            f"| {res['ours-ddim50']['swd']:.4f} | {res['diffusers-ddim50']['swd']:.4f} "
            f"| {f['swd_floor']:.4f} "
            f"| {res['ours-ddpm1000']['mmd2']:.2e} / {res['diffusers-ddpm1000']['mmd2']:.2e} "
            f"| {res['ours-ddpm1000']['energy_distance']:.4f} / "
            f"{res['diffusers-ddpm1000']['energy_distance']:.4f} "
            f"| {res['train_s_per_1k']['ours']:.2f} / {res['train_s_per_1k']['diffusers']:.2f} "
            f"| {res['ours-ddpm1000']['sample_s']:.1f} / "
            f"{res['diffusers-ddpm1000']['sample_s']:.1f} |"
        )
        print(rows[-1], flush=True)

    # Sampling speed: batch 64 against diffusers, batch 10k against the network alone.
    net = ours.eps_model.eval()
    speed = {}
    for label, ours_fn, diff_fn in (
        (
            "ddpm1000",
            lambda: sample_ours(ours, 64, 1, "ancestral"),
            lambda: sample_diffusers(net, sched, 64, 1),
        ),
        (
            "ddim50",
            lambda: sample_ours(ours, 64, 1, "ddim"),
            lambda: sample_diffusers(net, dsched, 64, 1),
        ),
    ):
        to, td = [], []
        for _ in range(5):  # interleaved pairs
            to.append(timed(ours_fn)[1])
            td.append(timed(diff_fn)[1])
        speed[f"b64_{label}"] = {"ours": statistics.median(to), "diffusers": statistics.median(td)}
    big = a.n_eval
    tb, tn, cb, cn = [], [], [], []
    for _ in range(a.big_repeats):  # interleaved pairs, median; also CPU time of this process
        c0 = time.process_time()
        tb.append(timed(lambda: sample_ours(ours, big, 1, "ancestral"))[1])
        c1 = time.process_time()
        tn.append(net_only(net, big, T))
        cb.append(c1 - c0)
        cn.append(time.process_time() - c1)
    t_big, t_net = statistics.median(tb), statistics.median(tn)
    c_big, c_net = statistics.median(cb), statistics.median(cn)
    speed["b_big_ddpm1000"] = {"ours": t_big, "network_only": t_net, "batch": big}
    speed["b_big_ddpm1000"].update(ours_cpu=c_big, network_only_cpu=c_net)
    results["_speed"] = speed

    print()
    print(
        "| toy | SW1 DDPM-1000 ours | diffusers | SW1 DDIM-50 ours | diffusers | SW1 floor "
        "| MMD² ours / diffusers | energy ours / diffusers | train s/1k ours / diffusers "
        "| sample 10k s ours / diffusers |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)
    print()
    for toy in a.toys:
        r = results[toy]
        if "loop_overhead" in r:
            print(
                f"{toy}: loop overhead {100 * r['loop_overhead']:.1f}% "
                f"(fit {r['train_s_per_1k']['ours']:.2f} s/1k, "
                f"bare {r['train_s_per_1k']['bare']:.2f})"
            )
    for k, v in speed.items():
        if "diffusers" in v:
            print(
                f"sampling {k}: ours {v['ours']:.3f}s, diffusers {v['diffusers']:.3f}s, "
                f"ratio {v['ours'] / v['diffusers']:.2f}x"
            )
        else:
            print(
                f"sampling batch {v['batch']} DDPM-1000: ours {v['ours']:.2f}s, network alone "
                f"{v['network_only']:.2f}s, ratio {v['ours'] / v['network_only']:.3f}; CPU time "
                f"{v['ours_cpu']:.2f}s / {v['network_only_cpu']:.2f}s, ratio "
                f"{v['ours_cpu'] / v['network_only_cpu']:.3f}"
            )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
