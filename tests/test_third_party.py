"""What running the suite on third-party optimizers taught it (reports/third-party.md), each with
a correct implementation or a control here, none needing the libraries themselves:

- per-group betas are given under the keys the optimizer reads (optimi keeps `beta1`, `beta2`
  in its groups; the constructor's `betas` sets only its defaults);
- optimi's evaluation order (bias-corrected moments mixed by a lerp) is in the bound under
  moments=debiased, whatever the counter;
- the root-cause summary names no convention the fingerprint could not determine, nor stored
  moments that the layout decodes;
- the float32-hyperparameters note needs a control that judges the missed elements (a beta
  rounded to 1.0 leaves no oracle) and accounts for most of the miss (the float32 profile's
  bound near t = 2^24 takes in AdamAtan2's step too);
- groups.no_decay names the step, not the weight_decay=0 group, where every group fails;
- heavyball's eps floor is the named convention eps=floor, and torchao's bias corrections formed
  in float32 get a note from its own control (the libraries themselves only under -m slow).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from adamw_conformance.adapters.base import GroupSetup, Setup
from adamw_conformance.adapters.torch_optim import TorchOptimizerAdapter
from adamw_conformance.core.judge import Model, ratios
from adamw_conformance.report.summary import fingerprint_lines
from adamw_conformance.spec import registry
from adamw_conformance.spec.bounds import Precision, environment, max_over_orders
from adamw_conformance.spec.conventions import Convention
from adamw_conformance.spec.markers import strip
from adamw_conformance.spec.orders import debiased_lerp
from adamw_conformance.spec.orders_in_play import adamw_orders
from adamw_conformance.tools.fingerprint.answers import Answer

from impl.layouts import OptimiOrderAdamW
from tests.suite import run_suite
from tests.test_facts import _order_points, branches, equal_at

OPTIMI = Convention(counter="global", moments="debiased")


def test_each_group_steps_with_its_own_betas() -> None:
    hypers = [dict(lr=1e-3, beta1=b1, beta2=b2, eps=1e-8, weight_decay=0.0)
              for b1, b2 in ((0.5, 0.75), (0.9, 0.999))]
    setup = Setup([GroupSetup([np.ones(2)], h) for h in hypers], "float32", "cpu")
    run = TorchOptimizerAdapter(OptimiOrderAdamW).create(setup)
    assert [(g["beta1"], g["beta2"]) for g in run.opt.param_groups] == [(0.5, 0.75), (0.9, 0.999)]
    assert all("betas" not in g for g in run.opt.param_groups)


def test_optimi_order_passes_what_its_layout_and_order_failed() -> None:
    """groups.no_decay and groups.order failed where each group stepped with group 0's betas;
    exact.one_step and input.nonfinite missed by ~2 bounds where the lerp of small betas was
    not in the bound."""
    out = run_suite("conformance/test_groups.py::test_no_decay",
                    "conformance/test_groups.py::test_order",
                    "conformance/test_exact.py::test_one_step",
                    "conformance/test_input.py::test_nonfinite",
                    "--impl=impl.layouts:OptimiOrderAdamW", f"--conventions={OPTIMI.label()}")
    assert out.rc == pytest.ExitCode.OK, "\n\n".join(out.messages.values())


def test_debiased_lerp_equals_its_rule_and_is_in_its_bounds() -> None:
    rule = registry.get("adamw", OPTIMI)
    pts = _order_points(30)
    order = debiased_lerp()
    assert set(order.tree) == set(rule.update)
    for out, tree in order.tree.items():
        for branch in branches(strip(tree)):
            assert equal_at(branch, rule.update[out], pts), out
    for counter in ("parameter", "group", "global"):
        conv = Convention(counter=counter, moments="debiased")
        assert "debiased_lerp" in {o.name for o in adamw_orders(registry.get("adamw", conv),
                                                               conv)}
        # torch's orders are written for the default convention, any counter
        conv = Convention(counter=counter)
        assert "torch_loop" in {o.name for o in adamw_orders(registry.get("adamw", conv), conv)}
    assert "debiased_lerp" not in {o.name for o in adamw_orders(registry.get("adamw"))}


def test_the_lerp_of_small_betas_needs_its_order() -> None:
    """One step of OptimiOrderAdamW from drawn states with beta1 < 1/2 (the lerp's second
    branch): within the bound, and outside it without the traced order."""
    rule = registry.get("adamw", OPTIMI)
    hyper = dict(lr=1e-3, beta1=0.0184, beta2=0.5, eps=1e-8, weight_decay=0.1)
    t = 109
    rng = np.random.default_rng(3)
    n = 4000
    # the stored mh far from g: the lerp's (g - mh) (1 - w) carries w's rounding, u |g - mh|
    mh = (rng.standard_normal(n) * 100).astype(np.float32).astype(np.float64)
    vh = (rng.random(n) * 4 + 0.1).astype(np.float32).astype(np.float64)
    g = rng.uniform(-1.0, 1.0, n).astype(np.float32).astype(np.float64)
    theta = rng.standard_normal(n).astype(np.float32).astype(np.float64)
    p = torch.nn.Parameter(torch.tensor(theta, dtype=torch.float32))
    opt = OptimiOrderAdamW([p], lr=hyper["lr"], betas=(hyper["beta1"], hyper["beta2"]),
                           eps=hyper["eps"], weight_decay=hyper["weight_decay"])
    opt.param_groups[0]["step"] = torch.tensor(t - 1, dtype=torch.int32)
    opt.state[p] = {"exp_avg": torch.tensor(mh, dtype=torch.float32),
                    "exp_avg_sq": torch.tensor(vh, dtype=torch.float32)}
    p.grad = torch.tensor(g, dtype=torch.float32)
    opt.step()
    got = opt.state[p]["exp_avg"].double().numpy()
    state = {"m": mh, "v": vh}
    env = environment(rule.inputs, theta, g, state, hyper, t, rule.defaults)
    prec = Precision.of("float32")
    orders = adamw_orders(rule, OPTIMI)
    exact, _ = Model("adamw", OPTIMI).expect(theta, g, state, hyper, t, prec)
    with_order = max_over_orders(orders, env, prec)["m"]
    without = max_over_orders(tuple(o for o in orders if o.name != "debiased_lerp"), env,
                              prec)["m"]
    assert np.nanmax(ratios(got, exact["m"], with_order)) <= 1
    assert np.nanmax(ratios(got, exact["m"], without)) > 1


@dataclass
class _Verdict:
    code: int
    text: str


@dataclass
class _Fingerprint:
    found: Convention
    answers: dict[str, Answer] = field(default_factory=dict)
    undriven: str | None = None

    def spec_rule(self) -> str:
        return "adamw"

    def convention(self) -> Convention:
        return self.found

    def verdict(self) -> _Verdict:
        return _Verdict(0, "AdamW; counter could not be determined")


def _command(rule: str, conventions: str) -> str:
    return f"CMD --conventions={conventions}"


def test_an_undetermined_counter_is_not_named_as_a_cause() -> None:
    """optimi's counter probe raised (its Triton path on CPU): the counter keeps the default in
    the fingerprint's Convention, which is no finding; and bias-corrected moments are a cause
    only with a counter that is not per parameter."""
    unknown = {"counter": Answer("could not be determined: it raised", "", False),
               "moments": Answer("debiased", "", True)}
    fp = _Fingerprint(Convention(moments="debiased"), unknown)
    [line] = fingerprint_lines(fp, "adamw", "counter=group,moments=debiased", _command)
    assert "counter=parameter" not in line and "no named value for counter" in line, line
    [line] = fingerprint_lines(fp, "adamw", "default", _command)
    assert "moments=debiased" not in line.split("(fingerprint:")[0], line
    known = {"counter": Answer("parameter", "", True), "moments": Answer("debiased", "", True)}
    fp = _Fingerprint(Convention(moments="debiased"), known)
    [line] = fingerprint_lines(fp, "adamw", "default", _command)
    assert "finds what the run judged" in line, line
    fp = _Fingerprint(Convention(counter="group", moments="debiased"),
                      {**known, "counter": Answer("group", "", True)})
    lines = fingerprint_lines(fp, "adamw", "default", _command)
    assert "follows counter=group, moments=debiased" in lines[0], lines


#: The note's words (conformance/core/notes.py: float32_hyperparameters).
FLOAT32_NOTE = "with its hyperparameters rounded to float32"


def test_no_float32_note_on_a_rule_that_is_not_adams() -> None:
    out = run_suite("conformance/test_bias.py::test_counter",
                    "conformance/test_groups.py::test_none_grad",
                    "conformance/test_groups.py::test_no_decay", "--impl=impl.unknown:Atan2Like")
    failed = {k.split("::")[-1] for k in out.failed()}
    assert {"test_counter[past-16777216]", "test_none_grad", "test_no_decay"} <= failed, failed
    message = "\n".join(out.messages.values())
    assert FLOAT32_NOTE not in message and F32_CORRECTIONS_NOTE not in message, message
    [no_decay] = [v for k, v in out.messages.items() if k.endswith("test_no_decay")]
    assert "the step is wrong whatever the group" in no_decay, no_decay
    assert "whose weight_decay is 0" not in no_decay, no_decay


def test_a_control_without_an_oracle_is_no_evidence() -> None:
    """optimi's bias.counter[past-16777216]: beta1 = 1 - 2^-26 is 1.0 in float32, and the control
    oracle divides by 1 - 1^t = 0 (mpmath raises): the float32 note is not given."""
    import mpmath
    from adamw_conformance.core.judge import Mismatch
    from adamw_conformance.core.notes import _explains, _judges

    class NoOracle:
        def __getitem__(self, index: object) -> object:
            raise ZeroDivisionError

    @dataclass
    class _Bound:
        value: np.ndarray
        in_domain: np.ndarray

    mm = Mismatch("theta", (3,), 1.08, mpmath.mpf("4.3e-18"), 5e-7, 32, 32, "float32")
    finite = _Bound(np.full(8, 1e-6), np.ones(8, bool))
    assert not _judges({"theta": NoOracle()}, {"theta": finite}, [mm])
    assert not _judges({"theta": np.zeros(8)}, {"theta": _Bound(np.full(8, np.inf),
                                                                np.ones(8, bool))}, [mm])
    assert _judges({"theta": np.full(8, 1.0)}, {"theta": finite}, [mm])
    # a control whose oracle is no closer to the result than the verdict's explains nothing
    assert not _explains({"theta": np.zeros(8)}, [mm])
    assert _explains({"theta": np.full(8, 1.08)}, [mm])


class InfiniteAttributeAdamW(torch.optim.AdamW):
    """torch's AdamW with a number that never changes and is infinite, as torchao keeps
    `block_size = inf` on its full-precision optimizers."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.block_size = float("inf")


def test_an_infinite_number_is_not_a_counter() -> None:
    """inf + 1 == inf: the probe took torchao's block_size for a step counter, and replay wrote
    the step count into it."""
    from adamw_conformance.core import layout
    from adamw_conformance.core.config import Config
    from adamw_conformance.core.targets import resolve

    target = "tests.test_third_party:InfiniteAttributeAdamW"
    cfg = Config(resolve(target), Model("adamw"), impl_text=target)
    assert layout.of(cfg).counters == (("parameter", "step"),)


# --- heavyball: eps as a floor; torchao: bias corrections in float32 ---------------------------

def test_an_eps_floor_fails_the_default_and_the_root_cause_names_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    """heavyball's denominator is max(sqrt(vh), eps) (eps=floor): a real difference, failing
    under the default for that reason, named by the fingerprint from behaviour."""
    capsys.readouterr()
    out = run_suite("conformance/test_bias.py::test_step_one", "--impl=impl.mutants.eps:EpsFloor",
                    root_cause=True)
    text = capsys.readouterr().out
    assert out.rc == pytest.ExitCode.TESTS_FAILED, out.results
    cause = text.split("conformance: root cause", 1)[1]
    assert "the target follows eps=floor, where the run judged eps=after" in cause, cause
    assert "eps=floor: eps as a floor of the denominator" in cause
    assert "--conventions=eps=floor" in cause
    assert F32_CORRECTIONS_NOTE not in text, text


@pytest.mark.slow
def test_an_eps_floor_passes_the_catalogue_when_declared() -> None:
    out = run_suite("--impl=impl.mutants.eps:EpsFloor", "--conventions=eps=floor")
    assert out.rc == pytest.ExitCode.OK, "\n\n".join(out.messages.values())


#: The note's words (conformance/core/notes.py: float32_bias_corrections).
F32_CORRECTIONS_NOTE = "with its bias corrections 1 - beta^t formed in float32"


def test_bias_corrections_in_float32_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    """torchao's 1 - beta**step with a float32 step counter, the lerp weight 1 - beta in double:
    the note, from its control, on a plain-torch model of it, and the root cause counts it; not
    the every-hyperparameter float32 note, whose advice (--hyper-dtype=float32) rounds the lerp
    weight too."""
    capsys.readouterr()
    out = run_suite("conformance/test_bias.py::test_step_one",
                    "--impl=impl.tensor_lr:Float32CorrectionsAdamW", root_cause=True)
    text = capsys.readouterr().out
    assert out.rc == pytest.ExitCode.TESTS_FAILED, out.results
    [message] = out.messages.values()
    assert F32_CORRECTIONS_NOTE in message and "beta2=0.999999 -> " in message, message
    assert FLOAT32_NOTE not in message, message
    assert "the one failure carries the note on bias corrections formed in float32" in text, text


@pytest.mark.slow
def test_heavyball_passes_under_its_conventions_but_validation() -> None:
    pytest.importorskip("heavyball")
    out = run_suite("--impl=heavyball.AdamW", "--conventions=eps=floor,counter=global")
    failed = {k.split("::")[-1].split("[")[0] for k in out.failed()}
    assert failed == {"test_validation"}, "\n\n".join(out.messages.values())


@pytest.mark.slow
def test_torchao_value_failures_name_float32_bias_corrections() -> None:
    pytest.importorskip("torchao")
    out = run_suite("conformance/test_bias.py::test_step_one", "--impl=torchao.optim._AdamW")
    [message] = out.messages.values()
    assert F32_CORRECTIONS_NOTE in message, message
