"""Reusable networks: MLPs, time embeddings (and, later, U-Nets)."""

from .embeddings import sinusoidal_embedding
from .mlp import MLP, TimeMLP, activation

__all__ = ["MLP", "TimeMLP", "activation", "sinusoidal_embedding"]
