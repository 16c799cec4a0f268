"""Sharded targets (`--impl=zero:...`, `fsdp2:...`, `--world-size`): torch.optim.AdamW judged
through ZeroRedundancyOptimizer and FSDP2 on 2 ranks, usage errors, and the worker pool's
robustness: a rank that raises, hangs or dies fails with a message naming it, and no worker
process is left behind, even when the parent is killed.

The default run judges one property per engine (the pool of workers started once for this
module) and a dying rank; the whole catalogue, 4 ranks, a hang, a raise and the parent's death
are `slow`."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.suite import ROOT, run_suite

dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not (dist.is_available() and sys.platform.startswith("linux")),
                                reason="torch.distributed with gloo, on Linux (/proc)")

from adamw_conformance.adapters.base import GroupSetup, Setup  # noqa: E402
from adamw_conformance.sharded import pool  # noqa: E402
from adamw_conformance.sharded.adapter import ShardedAdapter  # noqa: E402
from adamw_conformance.sharded.worker import MARKER_ENV  # noqa: E402


def workers_of(parent: int) -> list[int]:
    """The live worker processes that `parent` started (they carry its pid in MARKER_ENV)."""
    mark = f"{MARKER_ENV}={parent}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if mark in env.split(b"\0") and stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module", autouse=True)
def one_pool():
    """Every suite run of this module shares one pool of 2 workers (a start is ~3 s)."""
    pool.KEEP_ACROSS_RUNS = True
    try:
        yield
    finally:
        pool.KEEP_ACROSS_RUNS = False
        pool.close_all()
    assert workers_of(os.getpid()) == []


HYPER = {"lr": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1}


def _setup() -> Setup:
    return Setup([GroupSetup([np.full(5, 0.5), np.full((3, 2), -0.25)], HYPER),
                  GroupSetup([np.full(3, 1.0)], {**HYPER, "weight_decay": 0.0})])


# --- usage errors --------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "says"), [
    (("--impl=zero:torch.optim.AdamW", "--world-size=0"),
     "--world-size='0': out of range; accepted: an integer from 1 to 16 (default 2)"),
    (("--impl=fsdp2:torch.optim.AdamW", "--world-size=two"),
     "--world-size='two': not a number of ranks; accepted: an integer from 1 to 16"),
    (("--impl=torch.optim.AdamW", "--world-size=2"),
     "--world-size='2': applies to a sharded target only, --impl=ENGINE:TARGET with ENGINE one "
     "of zero, fsdp2"),
    (("--impl=zero:math.pi",), "a sharded engine shards a torch.optim.Optimizer subclass"),
])
def test_bad_sharded_option_is_a_usage_error(args: tuple[str, ...], says: str) -> None:
    from tests.test_bad_targets import _in_process

    rc, output = _in_process(*args)
    assert rc == pytest.ExitCode.USAGE_ERROR, output
    assert says in output, output
    assert "Traceback" not in output, output


# --- torch.optim.AdamW through each engine, 2 ranks ----------------------------------------------

def test_zero_passes_replay_and_resume() -> None:
    """One property that replays state through ZeRO's full-state API (consolidate_state_dict,
    load_state_dict: write, step, read), one that saves and resumes through its checkpoint, and
    the sharded layouts: torch.optim.AdamW passes them on 2 ranks."""
    out = run_suite("conformance/test_exact.py::test_one_step", "conformance/test_state.py",
                    "conformance/test_shard.py", "--impl=zero:torch.optim.AdamW", "-k",
                    "plain or round_trip or layouts")
    assert out.rc == 0 and len(out.passed()) == 3, out.messages


def test_fsdp2_replays_and_its_resume_restarts_a_stateless_parameter() -> None:
    """FSDP2 passes the replayed step (state through get/set_optimizer_state_dict with
    full_state_dict=True) and the sharded layouts, and fails state.round_trip where a parameter
    had no gradient before the save: set_optimizer_state_dict on a fresh optimizer first
    creates every state with one step of zero gradients at lr=0
    (torch.distributed.checkpoint.state_dict._init_optim_state),
    so that parameter resumes with its counter at 1 and its first real step is taken at t=2
    (reports/sharded-audit.md)."""
    out = run_suite("conformance/test_exact.py::test_one_step", "conformance/test_state.py",
                    "conformance/test_shard.py", "--impl=fsdp2:torch.optim.AdamW", "-k",
                    "plain or round_trip or layouts")
    assert sorted(out.passed()) == ["conformance/test_exact.py::test_one_step[plain]",
                                    "conformance/test_shard.py::test_layouts"], out.messages
    message = out.messages["conformance/test_state.py::test_round_trip"]
    # The first step after the resume of a parameter with no gradient before the save (the
    # example drawn depends on the draws of the whole run, not only on this engine).
    found = re.search(r"after saving at step (\d+) and loading into a fresh optimizer, "
                      r"parameter 1 at step (\d+) differs", message)
    assert found and int(found[2]) == int(found[1]) + 1, message
    saved = int(found[1])
    plan = re.search(r"grad is None: (\[\[.*?\]\])\)", message)
    assert plan, message
    assert all(step[1] for step in ast.literal_eval(plan[1])[:saved]), message


@pytest.mark.slow
def test_flat_model_passes_layouts() -> None:
    """The plain-torch model of ZeRO-1/2's flat layout (impl/sharded/flat.py, whose mutants the
    kill matrix runs) passes shard.layouts under its group counter (the whole catalogue: slow)."""
    out = run_suite("conformance/test_shard.py", "--impl=impl.sharded.flat:FlatShardedAdamW",
                    "--conventions=counter=group")
    assert out.rc == 0 and len(out.passed()) == 1, out.messages


@pytest.mark.slow
@pytest.mark.parametrize(("engine", "world"), [("zero", 2), ("fsdp2", 2), ("zero", 4),
                                               ("fsdp2", 4)])
def test_whole_catalogue(engine: str, world: int) -> None:
    """torch.optim.AdamW through each engine, the whole catalogue: everything passes but FSDP2's
    state.round_trip (a parameter without state at the save; see the FSDP2 test above)."""
    out = run_suite(f"--impl={engine}:torch.optim.AdamW", f"--world-size={world}")
    allowed = {"conformance/test_state.py::test_round_trip"} if engine == "fsdp2" else set()
    assert set(out.failed()) <= allowed, out.messages
    assert any("test_shard.py" in k for k in out.passed()), out.results


@pytest.mark.slow
def test_flat_model_passes_the_whole_catalogue() -> None:
    out = run_suite("--impl=impl.sharded.flat:FlatShardedAdamW", "--conventions=counter=group")
    assert out.rc == 0, out.messages


def test_reproduce_line_names_the_world_size() -> None:
    from adamw_conformance.core.session import Session

    s = Session("zero:torch.optim.AdamW", world_size=2)
    assert "--impl=zero:torch.optim.AdamW" in s.reproduce("exact.one_step")
    assert "--world-size=2" in s.reproduce("exact.one_step")


# --- the verdict, sharded ----------------------------------------------------------------------

def test_sharded_verdict_combines_the_ranks() -> None:
    """Each rank judges its own shards of an FSDP2 step and the verdicts are gathered: a clean
    step passes with every element counted once; one element moved on the last rank after the
    step fails, named by rank (the control that the sharded verdict can fail)."""
    shapes = [(300, 7), (5,), (409,)]
    workers = pool.pool(2, 60.0)
    args = ("adamw_conformance.sharded.verdict", "bench_rank", (shapes, 0, HYPER, 1024))
    clean = workers.call("function", 0, args, "the verdict", 120.0)
    assert clean[0]["combined"] == clean[1]["combined"]
    assert clean[0]["combined"]["passed"] and clean[0]["combined"]["elements"] == 2514
    assert sorted(o["elements"] for o in clean) == [1256, 1258]  # dim 0: 150 rows, 3|2, 205|204
    bad = workers.call("function", 0, (*args[:2], (*args[2], True)), "the verdict", 120.0)
    verdict = bad[0]["combined"]
    assert verdict["outside"] == {"theta": 1}, verdict
    assert verdict["worst"]["theta"].startswith("rank 1, local element 0: theta[0]:"), verdict


@pytest.mark.parametrize("engine", ["zero", "fsdp2"])
def test_properties_judged_on_the_ranks_as_gathered(engine: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """shard.layouts judged on the ranks (each rank its own elements, the parent combining the
    reports) fails a mutant wrong on rank 1's shard only with the message judging the gathered
    values gives, character for character; the ranks did judge (every step of the run)."""
    from adamw_conformance.sharded import judging

    judged: list[bool] = []
    real = judging.on_ranks

    def counted(*args, **kwargs):
        out = real(*args, **kwargs)
        judged.append(out is not None)
        return out

    monkeypatch.setattr(judging, "on_ranks", counted)
    args = ("conformance/test_shard.py", f"--impl={engine}:impl.sharded.failing:WrongOnRankAdamW")
    on_ranks = run_suite(*args)
    assert judged and all(judged), judged
    monkeypatch.setattr(judging, "ON_RANKS", False)
    gathered = run_suite(*args)
    key = "conformance/test_shard.py::test_layouts"
    assert on_ranks.results[key] == gathered.results[key] == "failed"
    assert on_ranks.messages[key] == gathered.messages[key]
    assert "1 of " in on_ranks.messages[key]


@pytest.mark.parametrize("engine", ["zero", "fsdp2"])
def test_loss_scaling_both_patterns(engine: str) -> None:
    """scale.grad_scaler through ZeRO and FSDP2 (torch.amp.GradScaler on every rank, as torch's
    own FSDP2 test of it does): a step with an inf/NaN gradient skipped on every rank, the
    others judged on the unscaled gradient, with and without scaler.unscale_ before
    scaler.step."""
    out = run_suite("conformance/test_scale.py", "-k", "grad_scaler",
                    f"--impl={engine}:torch.optim.AdamW")
    assert sorted(out.passed()) == ["conformance/test_scale.py::test_grad_scaler[step]",
                                    "conformance/test_scale.py::test_grad_scaler[unscale]"], \
        out.messages


def test_reading_a_fresh_fsdp2_state_creates_none() -> None:
    """Reading FSDP2's state before the first step leaves it without state: through
    get_optimizer_state_dict it would take a zero step first (_init_optim_state), and the first
    real step would count t=2 (what scale.grad_scaler failed on while it read the state before
    its first step)."""
    run = ShardedAdapter("fsdp2", "torch.optim.AdamW", directory=ROOT).create(_setup())
    assert [run.read_state(i) for i in range(3)] == [None] * 3
    run.step([np.full(5, 0.5), np.full((3, 2), 0.25), np.full(3, -0.5)])
    assert [run.read_state(i).step for i in range(3)] == [1, 1, 1]


# --- a rank that misbehaves ---------------------------------------------------------------------

def _second_step_fails(target: str, timeout: float = 60.0) -> tuple[str, list[int]]:
    """Create and step a run twice (the target misbehaves on rank 1 from its second step): the
    failure's message and the pool's worker pids."""
    from adamw_conformance.core.calls import ImplementationError

    ShardedAdapter("zero", "torch.optim.AdamW", directory=ROOT).create(_setup())  # warm
    adapter = ShardedAdapter("zero", target, directory=ROOT, timeout=timeout)
    run = adapter.create(_setup())
    pids = pool.pool(2, 60.0).pids
    grads = [np.full(5, 0.5), np.full((3, 2), 0.25), np.full(3, -0.5)]
    run.step(grads)
    with pytest.raises(ImplementationError) as failure:
        run.step(grads)
    return str(failure.value), pids


def _gone(pids: list[int]) -> bool:
    alive = set(workers_of(os.getpid()))
    return not alive & set(pids)


def test_a_dying_rank_is_named_and_no_process_is_left() -> None:
    message, pids = _second_step_fails("impl.sharded.failing:DyingRankAdamW")
    assert message.startswith("rank 1 of 2 died (exit code 3) in step()"), message
    assert "rank 0 of 2" in message, message  # raised (gloo: connection reset) or waits
    assert _gone(pids), workers_of(os.getpid())


@pytest.mark.slow
def test_a_raising_rank_is_named() -> None:
    message, pids = _second_step_fails("impl.sharded.failing:RaisingRankAdamW")
    assert ("rank 1 of 2 raised RuntimeError in step(): RaisingRankAdamW: deliberate failure "
            "on this rank") in message, message
    assert _gone(pids)
    # the next run starts a fresh pool
    run = ShardedAdapter("zero", "torch.optim.AdamW", directory=ROOT).create(_setup())
    run.step([np.full(5, 0.5), None, np.full(3, -0.5)])
    assert set(pool.pool(2, 60.0).pids).isdisjoint(pids)
    assert np.all(run.params()[1] == np.float32(-0.25))


@pytest.mark.slow
def test_a_hanging_rank_is_named() -> None:
    message, pids = _second_step_fails("impl.sharded.failing:HangingRankAdamW", timeout=3.0)
    assert ("rank 1 of 2 did not return within 2.7 s from step(): stuck in "
            "impl/sharded/failing.py:") in message and "in misbehave" in message, message
    assert "rank 0 of 2 did not return within 2.7 s from step(): stuck in " in message, message
    assert _gone(pids)


_PARENT = """
import sys, time
sys.path.insert(0, {root!r})
from adamw_conformance.sharded import pool
p = pool.pool(2, 120.0)
print(" ".join(map(str, p.pids)), flush=True)
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_workers_die_with_their_parent(how: signal.Signals) -> None:
    """The parent killed outright (no atexit, no cleanup) or interrupted: its workers go too."""
    parent = subprocess.Popen([sys.executable, "-c", _PARENT.format(root=str(ROOT))],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        pids = [int(x) for x in parent.stdout.readline().split()]
        assert len(pids) == 2 and set(workers_of(parent.pid)) == set(pids)
        parent.send_signal(how)
        parent.wait(30)
        deadline = time.monotonic() + 10
        while workers_of(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert workers_of(parent.pid) == []
    finally:
        parent.kill()
        parent.wait()


# --- DeepSpeed ZeRO-1/2: an optional extra -------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("engine", ["deepspeed-zero1", "deepspeed-zero2"])
def test_deepspeed(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.optim.AdamW under DeepSpeed ZeRO (gradient clipping off): its trajectory is AdamW's
    and a resume through its own checkpoint (save_checkpoint/load_checkpoint) is the
    uninterrupted run; groups.none_grad fails: a parameter left out of the loss (no gradient)
    is stepped as if its gradient were zero (its decay applied), and a 0-dim parameter is
    refused at creation (reports/sharded-audit.md; impl/sharded/deepspeed_evidence.py);
    input.nonfinite fails: one NaN gradient element skips the whole float32 step (its overflow
    guard runs without loss scaling), where torch's AdamW poisons only that element. No
    checkpoint is left behind."""
    pytest.importorskip("deepspeed")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from adamw_conformance.sharded.deepspeed_engine import checkpoints_folder

    out = run_suite("conformance/test_exact.py::test_trajectory",
                    "conformance/test_state.py::test_round_trip",
                    "conformance/test_groups.py::test_none_grad",
                    "conformance/test_input.py::test_nonfinite",
                    f"--impl={engine}:torch.optim.AdamW")
    assert sorted(out.passed()) == ["conformance/test_exact.py::test_trajectory",
                                    "conformance/test_state.py::test_round_trip"], out.messages
    assert Path(checkpoints_folder(os.getpid())).is_dir()  # removed when this process exits
    message = out.messages["conformance/test_groups.py::test_none_grad"]
    assert ("groups.none_grad" in message
            or "self.dim() cannot be 0 to view Float as Byte" in message), message
    nonfinite = out.messages["conformance/test_input.py::test_nonfinite"]
    assert "other elements left the spec's bound" in nonfinite, nonfinite


@pytest.mark.slow
def test_deepspeed_second_group_state_is_unlinked_and_read_as_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """DeepSpeed 0.19 links the optimizer state of its first group's parameters only (it links
    every group after stepping the first: reports/sharded-audit.md): the first group's moments
    read through safe_get_full_optimizer_state, the second's not. Parameter 1 lies on rank 0
    alone (group 1 is 4 elements, 2 per rank): the ranks agree before the collective read, so
    the read neither hangs nor raises."""
    pytest.importorskip("deepspeed")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    adapter = ShardedAdapter("deepspeed-zero2", "torch.optim.AdamW", directory=ROOT, timeout=60)
    run = adapter.create(Setup([GroupSetup([np.ones(4)], HYPER),
                                GroupSetup([np.ones(1), np.ones(3)],
                                           {**HYPER, "weight_decay": 0.0})]))
    run.step([np.full(4, 0.5), np.full(1, 0.5), np.full(3, 0.5)])
    full = run._full()["state"]
    assert sorted(full[0]) == ["exp_avg", "exp_avg_sq"], full
    assert full[1] == full[2] == {}, full
