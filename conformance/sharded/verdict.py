"""The verdict, sharded: each rank judges the elements it holds against the oracle, and the ranks
combine their verdicts, so that judging a step scales with the ranks as the step does.

`judge_local` is one rank's verdict on its elements (the suite's own `Model.expect` and
`compare`, chunk by chunk, so that memory stays bounded); `combine` is the verdict of all ranks
(every rank's counts and worst element, gathered). `bench_rank` is one rank's part of the
benchmark (`python -m adamw_conformance.tools.shardbench`): a full AdamW step of a model with
the given shapes through FSDP2, judged where each shard lives.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Elements judged at once: the float64 filter's temporaries are a few dozen arrays this long.
CHUNK = 1 << 21


@dataclass
class LocalVerdict:
    """One rank's verdict: how many elements it judged, how many broke their bound, and the
    worst one per output (its message), by that output's |error| / bound."""

    rank: int = 0
    elements: int = 0
    outside: dict[str, int] = field(default_factory=dict)
    worst: dict[str, tuple[float, str]] = field(default_factory=dict)
    seconds: float = 0.0

    def merge(self, other: LocalVerdict, offset: int) -> None:
        """Fold in the verdict on this rank's next elements (local offset `offset`)."""
        self.elements += other.elements
        for k, n in other.outside.items():
            self.outside[k] = self.outside.get(k, 0) + n
        for k, (ratio, text) in other.worst.items():
            if ratio > self.worst.get(k, (-1.0, ""))[0]:
                local = int(text.split("local element ", 1)[1].split(":", 1)[0])
                self.worst[k] = (ratio, text.replace(f"local element {local}:",
                                                     f"local element {offset + local}:", 1))

    def add(self, output: str, mismatch: Any, offset: int) -> None:
        if mismatch is None:
            return
        self.outside[output] = self.outside.get(output, 0) + mismatch.count
        err = abs(float(mismatch.got) - float(mismatch.exact))
        ratio = err / mismatch.bound if mismatch.bound > 0 else float("inf")
        if ratio > self.worst.get(output, (-1.0, ""))[0]:
            where = f"rank {self.rank}, local element {offset + mismatch.index[0]}: "
            self.worst[output] = (ratio, where + mismatch.describe())


def judge_local(before: np.ndarray, grad: np.ndarray, state: Mapping[str, np.ndarray],
                after: Mapping[str, np.ndarray], hyper: Mapping[str, float], t: int,
                dtype: str, rank: int = 0, chunk: int = CHUNK) -> LocalVerdict:
    """This rank's elements (flat arrays of any float dtype that holds them exactly: parameters
    before, gradient, state before, and after: theta and the state) judged against the oracle
    step, chunk by chunk (each chunk widened to float64 on its own)."""
    from adamw_conformance.core.judge import Model, compare
    from adamw_conformance.spec.bounds import Precision
    from adamw_conformance.spec.formats import opmath

    model = Model()
    prec = Precision.of(dtype, state=dtype, compute=opmath(Precision.of(dtype).param).name)
    verdict = LocalVerdict(rank=rank)
    start = time.perf_counter()
    for lo in range(0, before.size, chunk):
        hi = min(lo + chunk, before.size)
        exact, bound = model.expect(_wide(before, lo, hi), _wide(grad, lo, hi),
                                    {k: _wide(x, lo, hi) for k, x in state.items()}, hyper, t,
                                    prec)
        for output, got in after.items():
            if output in bound:
                verdict.add(output, compare(output, _wide(got, lo, hi), exact[output],
                                            bound[output], dtype), lo)
        verdict.elements += hi - lo
    verdict.seconds = time.perf_counter() - start
    return verdict


def _wide(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.asarray(x[lo:hi], dtype=np.float64)


def combine(verdicts: Sequence[LocalVerdict]) -> dict[str, Any]:
    """The verdict of all ranks: elements judged, elements outside per output, the worst."""
    outside: dict[str, int] = {}
    worst: dict[str, tuple[float, str]] = {}
    for v in verdicts:
        for k, n in v.outside.items():
            outside[k] = outside.get(k, 0) + n
        for k, w in v.worst.items():
            if w[0] > worst.get(k, (-1.0, ""))[0]:
                worst[k] = w
    return {"elements": sum(v.elements for v in verdicts), "outside": outside,
            "worst": {k: w[1] for k, w in worst.items()}, "passed": not outside}


def bench_rank(shapes: Sequence[tuple[int, ...]], seed: int, hyper: Mapping[str, float],
               chunk: int = CHUNK, corrupt: bool = False) -> dict[str, Any]:
    """One rank's part of the benchmark: a model of these shapes sharded by FSDP2 over the
    process group, one AdamW step from a state made by a first step, and that step judged on
    this rank's shards; then the ranks' verdicts gathered (every rank gets the combined one).
    `corrupt`: the last rank's first parameter element moved by 2^-10 of itself after the step
    (the control: the sharded verdict must name it)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import distribute_tensor

    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    gen = torch.Generator().manual_seed(seed)
    module = torch.nn.Module()
    module.ps = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes])
    fully_shard(module, mesh=mesh)
    params = list(module.parameters())
    opt = torch.optim.AdamW(params, lr=hyper["lr"], betas=(hyper["beta1"], hyper["beta2"]),
                            eps=hyper["eps"], weight_decay=hyper["weight_decay"], foreach=False)

    def gradients() -> None:
        for p in params:
            full = torch.randn(p.shape, generator=gen)
            p.grad = distribute_tensor(full, mesh, p.placements)

    gradients()
    opt.step()  # the state the judged step starts from
    gradients()

    def local(x: torch.Tensor) -> np.ndarray:
        return x.to_local().detach().reshape(-1).numpy()

    # Copies of what the step reads; what it writes is read in place afterwards.
    before = [local(p).copy() for p in params]
    grad = [local(p.grad).copy() for p in params]
    state = [{k: local(opt.state[p][key]).copy() for k, key in (("m", "exp_avg"),
                                                                 ("v", "exp_avg_sq"))}
             for p in params]
    t0 = time.perf_counter()
    opt.step()
    step_s = time.perf_counter() - t0
    if corrupt and rank == world - 1:
        with torch.no_grad():
            x = params[0].to_local().reshape(-1)
            x[0] += x[0] * 2.0**-10
    dist.barrier()
    t0 = time.perf_counter()
    mine = LocalVerdict(rank=rank)
    offset = 0
    for i, p in enumerate(params):
        after = {"theta": local(p), "m": local(opt.state[p]["exp_avg"]),
                 "v": local(opt.state[p]["exp_avg_sq"])}
        part = judge_local(before[i], grad[i], state[i], after, hyper, 2, "float32", rank, chunk)
        mine.merge(part, offset)
        offset += part.elements
    mine.seconds = time.perf_counter() - t0
    mine_s = mine.seconds
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    wall = time.perf_counter() - t0
    return {"rank": rank, "elements": mine.elements, "judge_s": mine_s, "wall_s": wall,
            "step_s": step_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "combined": combine(gathered)}
