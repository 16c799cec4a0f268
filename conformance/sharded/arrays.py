"""What a rank's engine and its verdict both read: counter names, tensors as float64 arrays.

A leaf, so that the engines (sharded/engines.py) and a rank's verdict (sharded/rank_judge.py),
which the engines call, do not import each other.
"""

from __future__ import annotations

import numpy as np
import torch

#: names a counter may have in a rank's optimizer state
STEP_NAMES = ("step", "t", "count", "iteration")


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy().copy()
