"""One module per family of the lecture, each registered by name (``genmodels.registry``
imports a module when one of its names is first asked for); ``budgets`` holds every
model's training budget."""

__all__ = ["budgets", "classifier", "ddpm", "flows", "noise", "samplers", "vae"]


def __getattr__(name):
    # `genmodels.models.ddpm` etc. load on first use, like the registry does.
    if name in __all__:
        from importlib import import_module

        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'genmodels.models' has no attribute {name!r}")
