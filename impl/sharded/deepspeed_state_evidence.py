"""Evidence for reports/sharded-audit.md: where DeepSpeed ZeRO-1/2 (0.19.8, CPU, gloo, 2 ranks)
keeps the optimizer state of each parameter group, and why `safe_get_full_optimizer_state`
raises "exp_avg_sq not found" for the parameters of every group but the first. Needs deepspeed;
run from the repository root:

    DS_ACCELERATOR=cpu python -m impl.sharded.deepspeed_state_evidence [STAGE]
"""

from __future__ import annotations

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank(rank: int, world: int, port: int, stage: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), DS_ACCELERATOR="cpu")
    import deepspeed
    from deepspeed.utils import safe_get_full_optimizer_state

    deepspeed.init_distributed("gloo")
    module = torch.nn.Module()
    module.ps = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(n)) for n in (6, 2, 4)])
    groups = [{"params": list(module.ps)[:2], "weight_decay": 0.1},
              {"params": list(module.ps)[2:], "weight_decay": 0.0}]  # the no-decay group
    config = {"train_micro_batch_size_per_gpu": 1, "zero_allow_untested_optimizer": True,
              "gradient_clipping": 0.0, "zero_optimization": {"stage": stage},
              "steps_per_print": 2**30}
    engine, opt, _, _ = deepspeed.initialize(
        model=module, optimizer=torch.optim.AdamW(groups, lr=0.1), config=config)

    def say(*what: object) -> None:
        print(f"rank {rank}:", *what, flush=True)

    for t in (1, 2):
        engine.backward(sum((p * 0.5).sum() for p in engine.module.ps))
        engine.step()
        inner = opt.optimizer.state
        say(f"after step {t}: the inner optimizer's state per group's flat partition:",
            [sorted(inner[flat].keys()) for flat in opt.single_partition_of_fp32_groups])
        say(f"after step {t}: the state keys each parameter's fragment is linked to:",
            [p._hp_mapping.get_optim_state_keys() if p._hp_mapping is not None else "no fragment"
             for p in engine.module.ps])
    # Every parameter here straddles both ranks, so both raise alike and no collective is
    # left unmatched (a parameter held by one rank would leave the other in all_reduce).
    for i, p in enumerate(engine.module.ps):
        try:
            x = safe_get_full_optimizer_state(p, "exp_avg_sq")
            say(f"safe_get_full_optimizer_state(parameter {i}, 'exp_avg_sq'):", x.tolist())
        except ValueError as e:
            say(f"safe_get_full_optimizer_state(parameter {i}, 'exp_avg_sq') raised:", e)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    stage = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port, stage), nprocs=2)


if __name__ == "__main__":
    main()
