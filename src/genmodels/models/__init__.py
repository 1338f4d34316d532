"""One module per family of the lecture; importing this package registers them all."""

from . import classifier, ddpm, flows, noise, samplers, vae

__all__ = ["classifier", "ddpm", "flows", "noise", "samplers", "vae"]
