"""genmodels: the algorithms of a lecture on generative models, made real.

Public entry points::

    import genmodels
    data = genmodels.data.load("moons")
    model = genmodels.load("runs/ddpm-moons")      # a trained run, eval mode
    x = model.sample(1000)
"""

from importlib import import_module as _import_module

__version__ = "0.1.0"

__all__ = ["__version__", "load", "data", "train", "evaluate", "models", "registry"]


def load(run_dir, *, device="cpu", weights="ema"):
    """Load a trained run directory; see :func:`genmodels.train.checkpoint.load_run`."""
    from .train.checkpoint import load_run

    return load_run(run_dir, device=device, weights=weights)


def __getattr__(name):
    # Subpackages load on first use, so `import genmodels` stays light.
    if name in {
        "data",
        "train",
        "evaluate",
        "models",
        "registry",
        "integrate",
        "inference",
        "distributions",
        "nn",
        "plot",
    }:
        return _import_module(f".{name}", __name__)
    raise AttributeError(f"module 'genmodels' has no attribute {name!r}")
