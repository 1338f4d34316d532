"""Reusable networks: MLPs, time embeddings, coupling conditioners, U-Nets, and the factory
that picks one for a data shape (``factory.py``)."""

from .conditioner import Conditioner
from .conv_conditioner import ConvConditioner
from .embeddings import sinusoidal_embedding
from .factory import (
    FlatTimeNetwork,
    NetworkChoice,
    conditioner_choice,
    conditioner_options,
    time_network,
    time_network_choice,
    time_network_for,
)
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
    "FlatTimeNetwork",
    "NetworkChoice",
    "time_network",
    "time_network_for",
    "time_network_choice",
    "conditioner_choice",
    "conditioner_options",
]
