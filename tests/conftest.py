import os

import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# One intra-op thread: the tests are many small ops, where thread hand-offs cost more than
# they give, and a busy 2-core machine makes spinning OpenMP workers 10x slower.
torch.set_num_threads(1)
