"""Suite-wide settings."""

import os

import torch

# The tests run many small tensor operations; on a 2-core machine one torch thread
# per process is several times faster than two threads contending with each other.
torch.set_num_threads(1)
os.environ.setdefault("TQDM_DISABLE", "1")
