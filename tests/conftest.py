"""Suite-wide settings."""

import torch

# Two cores run two xdist workers; torch's own thread pool on top only oversubscribes them.
torch.set_num_threads(1)
