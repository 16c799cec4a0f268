"""Evidence for reports/sharded-audit.md: DeepSpeed ZeRO-2 (0.19.8, CPU, gloo, 2 ranks, gradient
clipping off) on shapes torch.optim.AdamW takes, and on a parameter without a gradient. Needs
deepspeed; run from the repository root:

    DS_ACCELERATOR=cpu python -m impl.sharded.deepspeed_evidence
"""

from __future__ import annotations

import os

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, Setup
from adamw_conformance.sharded.adapter import ShardedAdapter


def main() -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    h = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
    a = ShardedAdapter("deepspeed-zero2", "torch.optim.AdamW")
    for shapes in ([(0,)], [()], [(5,), (0,)], [(3,)]):
        try:
            r = a.create(Setup([GroupSetup([np.ones(s) for s in shapes], h)]))
            r.step([np.full(s, .5) for s in shapes])
            print("shapes", shapes, "stepped:", [p.tolist() for p in r.params()])
        except Exception as e:  # noqa: BLE001 - what it raised is the evidence
            print("shapes", shapes, "raised", type(e).__name__, str(e)[:160])
    r = a.create(Setup([GroupSetup([np.ones(4), np.ones(3)], h)]))
    r.step([np.full(4, .5), None])
    print("parameter 1 without a gradient (lr 0.1, weight_decay 0.1, theta 1.0):",
          r.params()[1].tolist(), r.read_state(1))


if __name__ == "__main__":
    main()
