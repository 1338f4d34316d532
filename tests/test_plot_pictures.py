"""A run's pictures are chosen by the model's task; plot/ imports nothing above it."""

import subprocess
import sys
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Categorical, Normal

from genmodels.data.batches import Tasks
from genmodels.plot import save_run_pictures
from genmodels.plot.classifier import decision_map
from genmodels.plot.process import process_predictions

HISTORY = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)]


def _points(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    return SimpleNamespace(x=x, y=(x[:, 0] > 0).long(), info=SimpleNamespace(kind="points"))


class Sampler(nn.Module):
    def sample(self, n, *, generator=None):
        return torch.randn(n, 2, generator=generator)


class HalfPlanes(nn.Module):
    """Class 1 right of x0 = 0 with confidence sigmoid(10 x0)."""

    def predict(self, x):
        return Categorical(logits=torch.stack([torch.zeros(len(x)), 10 * x[:, 0]], 1))


class SinProcess(nn.Module):
    """The process contract: sin(3x) ± 0.1; sampled function j is sin(3x) + 0.3 (j + 1)."""

    def predict(self, xc, yc, xt):
        return Normal(torch.sin(3 * xt), torch.full_like(xt, 0.1))

    def sample_functions(self, xc, yc, xt, n, *, generator=None):
        shift = 0.3 * torch.arange(1, n + 1, dtype=xt.dtype).view(n, 1, 1, 1)
        return torch.sin(3 * xt) + shift


class TaskData:
    def __init__(self, seed):
        self.seed, self.calls = seed, []

    def batches(self, size):
        self.calls.append(size)
        g = torch.Generator().manual_seed(self.seed)
        xc, xt = torch.rand(size, 5, 1, generator=g), torch.rand(size, 20, 1, generator=g)
        yield Tasks(xc, torch.sin(3 * xc), xt, torch.sin(3 * xt))


def _written(path):
    return sorted(p.name for p in path.iterdir())


def test_pictures_by_task(tmp_path):
    pts = _points()
    for task, model, want in [
        ("density", Sampler(), ["loss.png", "samples.png"]),
        ("classifier", HalfPlanes(), ["decisions.png", "loss.png"]),
        ("series", Sampler(), ["loss.png"]),  # no noise-free curves: the loss curve only
    ]:
        out = tmp_path / task
        out.mkdir()
        save_run_pictures(model, pts, HISTORY, out, task=task)
        assert _written(out) == want, task
    # a classifier of images: nothing beyond the loss curve
    images = SimpleNamespace(x=torch.zeros(10, 1, 8, 8), y=torch.zeros(10).long())
    images.info = SimpleNamespace(kind="images")
    (tmp_path / "img").mkdir()
    save_run_pictures(HalfPlanes(), images, HISTORY, tmp_path / "img", task="classifier")
    assert _written(tmp_path / "img") == ["loss.png"]
    with pytest.raises(ValueError, match="task must be one of"):
        save_run_pictures(Sampler(), pts, HISTORY, tmp_path, task="regression")


def test_a_process_is_drawn_on_the_test_tasks_when_given(tmp_path):
    train, test = TaskData(0), TaskData(1)
    save_run_pictures(SinProcess(), train, HISTORY, tmp_path, task="process", test=test)
    assert _written(tmp_path) == ["loss.png", "predictions.png"]
    assert test.calls == [4] and train.calls == []


def test_process_predictions_draws_the_predictive_mean_and_two_sigma_band():
    tasks = next(TaskData(2).batches(6))
    fig = process_predictions(SinProcess(), tasks, n_tasks=4, grid=50)
    assert len(fig.axes) == 4
    ax = fig.axes[1]
    gx, mu = ax.lines[0].get_data()
    np.testing.assert_allclose(mu, np.sin(3 * gx), atol=1e-6)
    # the band spans mean ± 2σ = ± 0.2 at every grid point
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() == pytest.approx(np.sin(3 * gx).max() + 0.2, abs=1e-5)
    assert band[:, 1].min() == pytest.approx(np.sin(3 * gx).min() - 0.2, abs=1e-5)
    # the grid covers the task's context and target inputs
    xs = torch.cat([tasks.x_context[1, :, 0], tasks.x_target[1, :, 0]])
    assert gx.min() <= float(xs.min()) and gx.max() >= float(xs.max())
    # the sampled functions come from the contract's sample_functions, drawn on the grid
    green = [ln for ln in ax.lines if ln.get_color() == "tab:green"]
    assert len(green) == 3
    for j, ln in enumerate(green):
        np.testing.assert_allclose(ln.get_ydata(), np.sin(3 * gx) + 0.3 * (j + 1), atol=1e-6)
    plt.close(fig)
    fig = process_predictions(SinProcess(), tasks, n_tasks=1, grid=20, n_functions=0)
    assert not [ln for ln in fig.axes[0].lines if ln.get_color() == "tab:green"]
    plt.close(fig)
    # draws a model declares incoherent (a CNP's marginals) are points, not curves
    marginal = SinProcess()
    marginal.coherent_functions = False
    fig = process_predictions(marginal, tasks, n_tasks=1, grid=20)
    assert not [ln for ln in fig.axes[0].lines if ln.get_color() == "tab:green"]
    pts = fig.axes[0].collections[1:4]  # after the band: the three draws' scatters
    for j, c in enumerate(pts):
        np.testing.assert_allclose(
            c.get_offsets()[:, 1], np.sin(3 * c.get_offsets()[:, 0]) + 0.3 * (j + 1), atol=1e-6
        )
    plt.close(fig)
    two_d = tasks._replace(x_context=torch.zeros(6, 5, 2))
    with pytest.raises(ValueError, match=r"1-D inputs.*\(6, 5, 2\)"):
        process_predictions(SinProcess(), two_d)


def test_decision_map_colours_each_side_by_its_class():
    pts = _points()
    fig = decision_map(HalfPlanes(), pts.x, pts.y, n=40)
    img = fig.axes[0].images[0].get_array()  # (40, 40, 3), rows = y, columns = x
    red0, red1 = plt.cm.tab10(0)[0], plt.cm.tab10(1)[0]
    # far from x0 = 0 the classifier is certain: the class colour; at x0 = 0: white
    assert img[20, 0, 0] == pytest.approx(red0, abs=1e-3)
    assert img[20, -1, 0] == pytest.approx(red1, abs=1e-3)
    plt.close(fig)


def test_plot_imports_nothing_above_it():
    code = (
        "import sys, genmodels.plot, genmodels.plot.classifier, genmodels.plot.process, "
        "genmodels.plot.flows, genmodels.plot.vae, genmodels.plot.chain, "
        "genmodels.plot.inference, genmodels.plot.series\n"
        "print(' '.join(m for m in sys.modules if m.startswith('genmodels.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    above = ("models", "train", "evaluate", "registry", "distributions", "inference", "nn")
    bad = [m for m in loaded if m.split(".")[1] in above]
    assert not bad, bad


class SpiralSplit:
    """A series split with noise-free curves: 3 series, labels 0, 1, 1."""

    def __init__(self):
        self.grid = torch.linspace(0, 2, 20)
        angle = self.grid.view(1, -1) * torch.tensor([[1.0], [-1.0], [-1.0]])
        self.clean = torch.stack([angle.cos(), angle.sin()], -1)  # (3, 20, 2)
        self.times = self.grid[:10:2].view(1, 5, 1).expand(3, 5, 1)
        self.values = self.clean[:, :10:2]
        self.mask = torch.ones_like(self.values, dtype=torch.bool)
        self.labels = torch.tensor([0, 1, 1])


class CurveModel(nn.Module):
    """Predicts the true curve of the series whose first value it is given."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.calls = []

    def predict(self, xc, yc, xt):
        self.calls.append((xc.shape, yc.shape, xt.shape))
        sign = torch.where(yc[:, 1:2, 1] > 0, 1.0, -1.0).view(-1, 1)
        angle = sign * xt.view(1, -1)
        mean = torch.stack([angle.cos(), angle.sin()], -1)
        return Normal(mean, torch.ones_like(mean))


def test_a_series_model_draws_reconstructions_of_one_series_per_label(tmp_path):
    model = CurveModel()
    save_run_pictures(model, SpiralSplit(), HISTORY, tmp_path, task="series")
    assert _written(tmp_path) == ["loss.png", "reconstructions.png"]
    assert model.calls == [((2, 5, 1), (2, 5, 2), (20, 1))]


def test_spiral_extrapolations_draws_one_row_per_model():
    from genmodels.plot.series import spiral_extrapolations

    split = SpiralSplit()
    args = (split.times, split.values, split.grid, split.clean)
    fig = spiral_extrapolations(*args, {"a": split.clean, "b": -split.clean}, titles=list("xyz"))
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "a: x"
    assert fig.axes[5].get_title() == "b: z"
    # the second row's reconstruction is the second mean's first half
    line = fig.axes[3].lines[1].get_xydata()
    assert line.shape == (10, 2) and line[0, 0] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="mean 'b'"):
        spiral_extrapolations(*args, {"a": split.clean, "b": split.clean[:2]})
    with pytest.raises(ValueError, match="non-empty mapping"):
        spiral_extrapolations(*args, {})


def test_accuracy_vs_dropped_draws_mean_and_range():
    from genmodels.plot.series import accuracy_vs_dropped

    fig = accuracy_vs_dropped([0.0, 0.5], {"a": [[0.9, 1.0], [0.8, 0.9]], "b": [[0.5], [0.5]]})
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), [0.95, 0.85])
    plt.close(fig)
    with pytest.raises(ValueError, match="2 drop rates"):
        accuracy_vs_dropped([0.0, 0.5], {"a": [[0.9]]})


def test_ode_pictures_take_tensors_and_write_files(tmp_path):
    from genmodels.plot.odes import density_evolution, resnet_vs_ode

    t = torch.linspace(0, 3, 20)
    resnet_vs_ode(torch.arange(4.0), torch.randn(4, 5), t, torch.randn(20, 5), t[::3],
                  torch.randn(7, 5), tmp_path / "traj.png")  # fmt: skip
    density_evolution(torch.linspace(1, 0, 5), torch.rand(5, 16, 16), (-2, 2, -2, 2),
                      tmp_path / "dens.png", data=torch.randn(30, 2))  # fmt: skip
    assert (tmp_path / "traj.png").stat().st_size > 0 and (tmp_path / "dens.png").stat().st_size > 0
