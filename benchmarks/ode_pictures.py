"""Section 4's pictures: the Neural ODE paper's Figure 1 and a CNF's density over t.

1. ``odenet_trajectories.png``: a 1-D hidden state through a residual network of 6 blocks
   (``h_{k+1} = h_k + f(h_k, k)``, i.e. Euler with step 1) beside the ODE ``dh/dt = f(h, t)`` on
   [0, 6] solved by dopri5 (rtol = atol = 1e-3), with every point where the solver evaluated
   ``f`` marked.  ``f`` is a fixed random MLP of ``(h, t)`` (seed 0), the same in both panels.
2. ``cnf_density_evolution.png``: a trained CNF run's density ``p_s`` (in the standardized
   coordinates the CNF works in) at 6 times from the base (``s = T``) to the data (``s = 0``):
   ``log p_s(y) = log N(z(T); 0, I) + ∫_s^T tr ∂f/∂z dt`` with ``CNF.trajectory(y, [s, T])``.

    PYTHONPATH=src python benchmarks/ode_pictures.py --run RUN_DIR --out docs/figures
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch import nn

import genmodels
from genmodels import data as gdata
from genmodels.integrate import odeint
from genmodels.plot.odes import density_evolution, resnet_vs_ode


class _Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 1))
        self.calls: list[tuple[float, torch.Tensor]] = []

    def forward(self, t, h):
        self.calls.append((float(t), h.detach().reshape(-1).clone()))
        tt = torch.as_tensor(t, dtype=h.dtype).expand(h.shape[0], 1)
        return 0.5 * self.net(torch.cat([h, tt], 1))


@torch.no_grad()
def trajectories(out: Path) -> None:
    torch.manual_seed(0)
    f = _Field()
    for p in f.net.parameters():
        nn.init.normal_(p, std=0.6)
    h0 = torch.linspace(-2, 2, 9).unsqueeze(1)
    L = 6
    res = [h0]
    for k in range(L):
        res.append(res[-1] + f(torch.tensor(float(k)), res[-1]))
    f.calls.clear()
    kw = dict(method="dopri5", rtol=1e-3, atol=1e-3)
    odeint(f, h0, torch.tensor([0.0, float(L)]), **kw)
    calls = [c for c in f.calls if c[0] <= L]  # trial steps of the initial step selection
    print(
        f"({len(f.calls) - len(calls)} trial evaluations of the initial step selection "
        f"past t = {L} left out)"
    )
    f.calls.clear()
    ts = torch.linspace(0, L, 200)
    hs = odeint(f, h0, ts, **kw)[..., 0]
    print(f"ODE: {len(calls)} field evaluations on [0, {L}] (dopri5, rtol = atol = 1e-3)")
    resnet_vs_ode(
        torch.arange(L + 1.0), torch.stack(res)[..., 0], ts, hs,
        torch.tensor([c[0] for c in calls]), torch.stack([c[1] for c in calls]),
        out / "odenet_trajectories.png",
    )  # fmt: skip


@torch.no_grad()
def densities(run: Path, out: Path, n: int, panels: int) -> None:
    model = genmodels.load(run)
    cnf, T = model.cnf, model.cnf.T
    lim = 2.5
    xs = torch.linspace(-lim, lim, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(xs, xs, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).to(torch.float32)
    times = torch.linspace(T, 0.0, panels)
    dens = []
    for s in times.tolist():
        if s >= T:
            logp = -0.5 * grid.pow(2).sum(1) - math.log(2 * math.pi)
        else:
            zs, ls = cnf.trajectory(grid, torch.tensor([s, T]))
            logp = -0.5 * zs[-1].pow(2).sum(1) - math.log(2 * math.pi) + ls[-1]
        dens.append(logp.exp().reshape(n, n))
        print(
            f"t = {s:.2f}: density mass on the grid "
            f"{float(dens[-1].sum()) * (2 * lim / (n - 1)) ** 2:.3f}"
        )
    name = json.loads((run / "config.json").read_text())["data"]
    z_data = model.standardize(gdata.load(name, "test").x[:2000])[0]
    density_evolution(
        times, torch.stack(dens), (-lim, lim, -lim, lim), out / "cnf_density_evolution.png",
        data=z_data, title=f"{name}, {run.name}: p_t from the base (t = T) to the data (t = 0)",
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, help="a trained ffjord/planar-cnf run directory")
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--panels", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    trajectories(args.out)
    if args.run is not None:
        densities(args.run, args.out, args.n, args.panels)


if __name__ == "__main__":
    main()
