"""Fixtures shared by every test level."""

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run and machine (seeds everywhere): a red test is
# reproducible, never a lucky draw.
settings.register_profile("seeded", derandomize=True)
settings.load_profile("seeded")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: a second torch thread only waits (6-20x slower measured).
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
