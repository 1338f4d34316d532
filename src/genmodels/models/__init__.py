"""One module per family of the lecture; importing this package registers them all."""

from . import ddpm

__all__ = ["ddpm"]
