"""Suite-wide settings.

The tests run small tensors, where torch's intra-op threads cost more than they save
(and on a busy 2-core machine make each op 10-100x slower), so every test runs on one
thread; the benchmarks set their own thread count.
"""

import torch

torch.set_num_threads(1)
