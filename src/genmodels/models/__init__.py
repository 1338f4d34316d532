"""One module per family of the lecture; importing this package registers them all."""

from . import classifier, ddpm, flows, vae

__all__ = ["classifier", "ddpm", "flows", "vae"]
