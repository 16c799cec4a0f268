"""Evidence for reports/sharded-audit.md: FSDP2's full-state API on an optimizer that has no state
for some parameter, or none at all. Run from the repository root:

    python -m impl.sharded.fsdp2_evidence
"""

from __future__ import annotations

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, Setup
from adamw_conformance.sharded.adapter import ShardedAdapter


def main() -> None:
    hyper = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
    a = ShardedAdapter("fsdp2", "torch.optim.AdamW")
    s = Setup([GroupSetup([np.ones(8), np.ones((2, 3))], hyper)])
    w = a.create(s)
    w.step([np.full(8, .5), None])
    print("1. after one step with no gradient for parameter 1, its state:", w.read_state(1))
    sd = w.state_dict()
    r = a.create(s)
    r.load_state_dict(sd)
    print("2. the checkpoint loaded into a fresh optimizer, parameter 1:", r.read_state(1))
    f = a.create(s)
    f.state_dict()  # get_optimizer_state_dict on a fresh optimizer: a checkpoint at step 0
    print("3. a fresh optimizer after get_optimizer_state_dict (a checkpoint at step 0):",
          f.read_state(0).step, f.read_state(1).step)
    f.step([np.full(8, .5), np.full((2, 3), .5)])
    print("4. its first real step is counted as t =", f.read_state(0).step)


if __name__ == "__main__":
    main()
