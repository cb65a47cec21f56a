"""Suite-wide settings.

The tests run small tensors, where torch's intra-op threads cost more than they save
(and on a busy 2-core machine make each op 10-100x slower), so every test runs on one
thread; the thread count is reset after each test, since the CLI's ``--threads`` changes
it process-wide. The benchmarks set their own thread count.
"""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)
