"""The exponential moving average of the weights."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EMA", "ema_weights"]


class EMA:
    """θ_ema ← decay θ_ema + (1 - decay) θ after every step (one fused call)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, copy: bool = False) -> None:
        """One step of the average; ``copy``: take the raw weights as they are."""
        w = 1.0 if copy else 1.0 - self.decay
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], w)

    def reset(self) -> None:
        """The shadow becomes the current weights (after a data-dependent init)."""
        self.shadow = [p.detach().clone() for p in self.params]

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the EMA values in place of the parameters."""
        sd = dict(model.state_dict())
        sd.update(dict(zip(self.names, self.shadow)))
        return sd

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow))

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        for s, n in zip(self.shadow, self.names):
            s.copy_(tensors[n])


class ema_weights:
    """Context manager: the EMA weights swapped into the model, then swapped back."""

    def __init__(self, ema: EMA | None):
        self.ema = ema

    def __enter__(self):
        if self.ema is not None:
            self.saved = [p.detach().clone() for p in self.ema.params]
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.ema.params], self.ema.shadow)

    def __exit__(self, *exc):
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.ema.params], self.saved)
