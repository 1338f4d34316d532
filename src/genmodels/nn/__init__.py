"""Reusable networks: MLPs, time embeddings, coupling conditioners, U-Nets."""

from .conditioner import Conditioner
from .conv_conditioner import ConvConditioner
from .embeddings import sinusoidal_embedding
from .mlp import MLP, TimeMLP, activation
from .unet import UNet

__all__ = [
    "MLP",
    "TimeMLP",
    "UNet",
    "Conditioner",
    "ConvConditioner",
    "activation",
    "sinusoidal_embedding",
]
