"""Evidence for reports/sharded-audit.md: loss scaling under FSDP2 (2 ranks, gloo, CPU). One
parameter of 6 elements sharded 3 + 3, its scaled gradient holding an inf in rank 0's shard or
in rank 1's; torch.amp.GradScaler and FSDP1's ShardedGradScaler, with and without
scaler.unscale_ before scaler.step. Every rank must skip the step. Run from the repository root:

    python -m impl.sharded.fsdp2_scaler_evidence
"""

from __future__ import annotations

import itertools
import os
import socket
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank(rank: int, world: int, port: int) -> None:
    warnings.filterwarnings("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
    from torch.distributed.tensor import distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    for kind, where, unscale in itertools.product(("GradScaler", "ShardedGradScaler"), (0, 5),
                                                  (False, True)):
        module = torch.nn.Module()
        module.ps = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(6))])
        fully_shard(module, mesh=mesh)
        p = next(module.parameters())
        opt = torch.optim.AdamW(module.parameters(), lr=0.1)
        g = torch.full((6,), 2.0)
        g[where] = float("inf")
        p.grad = distribute_tensor(g, mesh, p.placements)
        scaler = (torch.amp.GradScaler("cpu", init_scale=2.0) if kind == "GradScaler"
                  else ShardedGradScaler("cpu", init_scale=2.0))
        scaler.scale(torch.zeros(()))
        if unscale:
            scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        full = p.full_tensor()
        if rank == 0:
            print(f"{kind}, inf at element {where} (rank {where // 3}'s shard), "
                  f"unscale_ first: {unscale}: parameter {full.tolist()}, "
                  f"state {'none' if not opt.state else 'created'}, scale {scaler.get_scale()}",
                  flush=True)
        dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port), nprocs=2)


if __name__ == "__main__":
    main()
