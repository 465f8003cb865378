"""Test-wide settings."""

import torch

# These machines are small and shared: one intra-op thread per test process avoids
# oversubscription (measured: a 7.6 s file took 80–120 s with torch's default threads).
torch.set_num_threads(1)
