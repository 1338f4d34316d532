"""One module per family of the lecture; importing this package registers them all."""

from . import ddpm, vae

__all__ = ["ddpm", "vae"]
