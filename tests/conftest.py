"""Test-session settings: one torch thread (small tensors on a 2-core machine run faster
without intra-op threads contending; results do not depend on it), and a float64 fixture for
tests that compare against references to 1e-10."""

from collections.abc import Iterator

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def float64() -> Iterator[None]:
    """torch's default dtype is float64 inside the test (restored afterwards)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
