"""Meaning, not representation: a state stored in another layout (impl/layouts.py: bias-corrected
moments, a counter in the group's dict or under another name, powers of the betas, a counter
replay cannot reach) never fails a property by itself. The layout is found from behaviour,
replay goes through it or is refused with the reason, the header names it; a convention that
changes the parameters (a group counter, for a parameter that starts late) still fails under the
default, for that reason; and a wrong state in a known layout is still caught."""

from __future__ import annotations

import numpy as np
import pytest
from adamw_conformance.adapters.base import GroupSetup, ParamState, Setup
from adamw_conformance.core import calls, layout, replay
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Model
from adamw_conformance.core.targets import resolve
from adamw_conformance.spec.conventions import Convention

from tests.suite import ROOT, run_suite

HYPER = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}


def config(target: str, conventions: str = "default") -> Config:
    return Config(resolve(target), Model("adamw", Convention.parse(conventions)),
                  impl_text=target)


@pytest.mark.parametrize(("target", "moments", "counters", "refused"), [
    ("torch.optim.AdamW", "raw", [("parameter", "step")], None),
    ("impl.layouts:DebiasedAdamW", "debiased", [("parameter", "step")], None),
    ("impl.layouts:GroupStepAdamW", "raw", [("group", "step")], None),
    ("impl.layouts:OptimiLikeAdamW", "debiased", [("group", "step")], None),
    ("impl.layouts:StepsCounterAdamW", "raw", [("parameter", "steps")], None),
    ("impl.layouts:BetaPowerAdamW", "raw", [], "state['beta1_power'] changes every step"),
    ("impl.mutants.bias:GlobalCounter", "raw", [("parameter", "step"), ("attribute", "_calls")],
     None),
])
def test_the_layout_is_found_from_behaviour(target: str, moments: str,
                                            counters: list[tuple[str, str]],
                                            refused: str | None) -> None:
    found = layout.of(config(target))
    assert (found.source, found.moments, list(found.counters)) == ("detected", moments,
                                                                   counters), found
    assert (found.refused or "").startswith(refused or ""), found
    assert bool(found.refused) == bool(refused)


def test_a_counter_replay_cannot_reach_is_refused_with_the_reason() -> None:
    cfg = config("impl.layouts:HiddenCounterAdamW")
    assert not replay.can_replay(cfg)
    assert "one step left it at 2, not 4" in (replay.refusal(cfg) or "")


def test_decoding_inverts_encoding_and_reads_the_spec() -> None:
    """m = mh (1 - b1^t), v = vh (1 - b2^t): the spec's moments=debiased state, both ways."""
    s = ParamState(np.array([0.25, -3.0]), np.array([1.5, 0.0625]), 7)
    stored = layout.to_stored(s, "debiased", "raw", HYPER)
    assert np.allclose(stored.m * (1 - 0.9**7), s.m, rtol=0, atol=1e-15)
    back = layout.to_spec(stored, "debiased", "raw", HYPER)
    assert np.array_equal(back.m, s.m) and np.array_equal(back.v, s.v) and back.step == 7
    assert layout.to_spec(s, "raw", "raw", HYPER) is s  # the same form: nothing to do


@pytest.mark.parametrize("target", ["impl.layouts:StepsCounterAdamW",
                                    "impl.layouts:OptimiLikeAdamW"])
def test_replay_writes_the_counter_where_the_target_keeps_it(target: str) -> None:
    """Issue cases 2 and 3: replay at t=99 makes the next step the target's t=100, whether the
    counter is state['steps'] or param_groups[i]['step']."""
    cfg = config(target, "counter=group" if "Optimi" in target else "default")
    theta, m, v = np.array([1.0, -2.0]), np.array([0.5, -0.25]), np.array([0.25, 1.0])
    setup = Setup([GroupSetup([theta], HYPER)])
    state = ParamState(m, v, 99)
    run = replay.prepare(cfg, setup, [theta], [state])
    assert run is not None
    calls.step(cfg, run, [np.array([0.125, 0.5])])
    after = replay.read_states(run, 1)
    assert after is not None and after[0].step == 100


@pytest.mark.parametrize("argv", [
    ["--impl=impl.layouts:DebiasedAdamW"],
    ["--impl=impl.layouts:StepsCounterAdamW"],
    # the group counter alone: OptimiLikeAdamW below has it too (with debiased moments)
    pytest.param(["--impl=impl.layouts:GroupStepAdamW", "--conventions=counter=group"],
                 marks=pytest.mark.slow),
    ["--impl=impl.layouts:OptimiLikeAdamW", "--conventions=counter=group,moments=debiased"],
    # replay refused: the fallbacks ForeignAdamW exercises already (tests/test_foreign.py)
    pytest.param(["--impl=impl.layouts:BetaPowerAdamW"], marks=pytest.mark.slow),
    pytest.param(["--impl=impl.layouts:HiddenCounterAdamW"], marks=pytest.mark.slow),
    pytest.param(["--impl=impl.layouts:DebiasedAdamW", "--dtype=bfloat16"],
                 marks=pytest.mark.slow),
], ids=lambda a: " ".join(x.split(":")[-1] for x in a))
def test_whole_catalogue_passes(argv: list[str]) -> None:
    out = run_suite(*argv)
    assert out.rc == pytest.ExitCode.OK, "\n\n".join(f"{k}:\n{v}"
                                                     for k, v in out.messages.items())


def test_a_group_counter_still_fails_a_late_start_under_the_default() -> None:
    """The one layout difference that changes parameters: a parameter that starts late is
    corrected at the group's t, not at its own 1."""
    out = run_suite("conformance/test_bias.py::test_counter[late-start]",
                    "--impl=impl.layouts:GroupStepAdamW")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "at its t=1 under the 'parameter' counter convention" in message
    # the layout found the group's counter (heavyball's failures did not say so)
    assert ("the layout probe found the target's step counter kept as one counter per group "
            "(param_groups[i]['step'])") in message, message


def test_the_header_names_the_layout(capsys: pytest.CaptureFixture[str]) -> None:
    rc = pytest.main([str(ROOT / "conformance"), "--impl=impl.layouts:OptimiLikeAdamW",
                      "--collect-only", "-p", "no:cacheprovider", f"--rootdir={ROOT}"])
    assert rc == pytest.ExitCode.OK
    out = capsys.readouterr().out
    assert ("conformance: state=moments debiased, counter per group "
            "(param_groups[i]['step'])") in out, out
    assert "(detected); replayed through it" in out
