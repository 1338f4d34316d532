import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

TINY_DDPM = [
    "--set",
    "timesteps=50",
    "--set",
    "width=32",
    "--set",
    "depth=2",
    "--set",
    "emb_dim=16",
]


@pytest.fixture
def tiny_ddpm_args():
    return list(TINY_DDPM)
