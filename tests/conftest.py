"""Test-session settings: one torch thread (small tensors on a 2-core machine run faster
without intra-op threads contending; results do not depend on it)."""

import torch

torch.set_num_threads(1)
