"""Sharded optimizers on torch.distributed (gloo, CPU): `--impl=zero:torch.optim.AdamW`,
`--impl=fsdp2:torch.optim.AdamW`, judged through the same adapter protocol as any target.

`pool` starts and supervises the worker processes (one per rank), `worker` is their main loop,
`engines` builds the sharded optimizer in them (`RankRun`: a rank's side of a run), `adapter`
presents it to the suite (`ShardedRun`: the parent's side).
"""

from __future__ import annotations

#: The engines `--impl=ENGINE:target` names, with what they are.
ENGINES = {
    "zero": "torch.distributed.optim.ZeroRedundancyOptimizer: whole parameters assigned to ranks",
    "fsdp2": "FSDP2 fully_shard on a CPU device mesh: every parameter sharded on dim 0",
    "deepspeed-zero1": "DeepSpeed ZeRO-1 (an optional extra): flat padded fp32 partitions",
    "deepspeed-zero2": "DeepSpeed ZeRO-2 (an optional extra): flat padded fp32 partitions",
}
DEFAULT_WORLD = 2
#: Marks the worker processes (their environment: the suite process's pid), so that a test can
#: find any left behind and a worker knows whose files it writes.
MARKER_ENV = "ADAMW_CONFORMANCE_SHARD_WORKER"
#: The world sizes --world-size accepts: up to this many processes on one machine.
MAX_WORLD = 16


def split(text: str) -> tuple[str, str] | None:
    """'zero:torch.optim.AdamW' -> ('zero', 'torch.optim.AdamW'); None for any other form."""
    engine, sep, rest = text.strip().partition(":")
    return (engine, rest) if sep and engine in ENGINES and rest else None
