"""The convention fingerprint names, from behaviour alone, the conventions each implementation
follows (impl/conventions.py: correct AdamWs of the non-default conventions; mutants whose defect
is a named convention), and never crashes on a target that raises or hides its state."""

from __future__ import annotations

import json
from functools import cache

import pytest
from adamw_conformance.core.targets import resolve
from adamw_conformance.tools.fingerprint import (
    PROPERTIES,
    UNDETERMINED,
    Answer,
    Fingerprint,
    fingerprint,
    main,
)


@cache
def fp(target: str, dtype: str = "float32") -> Fingerprint:
    return fingerprint(resolve(target), dtype, timeout=30.0, impl_text=target)


@pytest.mark.parametrize("target, expected", [
    ("torch-loop", {}),
    ("impl.mutants.bias:GlobalCounter", {"counter": "global"}),
    ("impl.conventions:GroupCounterAdamW", {"counter": "group"}),
    ("impl.mutants.scale:EpsInsideSqrt", {"eps": "root"}),
    ("impl.conventions:EpsHatAdamW", {"eps": "hat"}),
    ("impl.conventions:DecayAfterUpdateAdamW", {"decay_target": "updated"}),
    ("impl.conventions:ScheduleCoupledAdamW", {"decay_coupling": "schedule"}),
    ("impl.mutants.decouple:DecayWithoutLR", {"decay_coupling": "independent"}),
    ("impl.conventions:DebiasedMomentsAdamW", {"moments": "debiased"}),
])
def test_names_the_convention(target: str, expected: dict[str, str]) -> None:
    found = fp(target)
    assert found.answers["coupling"].value == "decoupled", found.table()
    for name in ("decay_coupling", "decay_target", "eps", "counter", "moments"):
        want = expected.get(name, {"decay_coupling": "lr", "decay_target": "previous",
                                   "eps": "after", "counter": "parameter",
                                   "moments": "raw"}[name])
        answer = found.answers[name]
        assert (answer.value, answer.confident) == (want, True), found.table()
    text = ",".join(f"{k}={v}" for k, v in expected.items()) or "default"
    assert found.conventions_text() == text


@pytest.mark.parametrize("target, flavour", [
    ("torch-loop", "raw_max"), ("impl.conventions:CorrectedMaxAMSGrad", "corrected_max")])
def test_amsgrad_flavour(target: str, flavour: str) -> None:
    assert fp(target).answers["amsgrad"].value == flavour, fp(target).table()


def test_adam_with_weight_decay_is_l2() -> None:
    found = fp("torch.optim.Adam")
    assert found.answers["coupling"].value == "L2", found.table()
    assert found.rule_name() == "adam_l2"
    assert found.answers["eps"].value == "after"


def test_unreadable_state_is_said_not_guessed() -> None:
    found = fp("impl.foreign:ForeignAdamW")
    moments = found.answers["moments"]
    assert moments.value.startswith("unknown: state not readable") and not moments.confident
    assert found.answers["counter"].value == "parameter"
    assert found.answers["amsgrad"].value.startswith("not applicable")


def test_an_implementation_that_raises_is_an_answer() -> None:
    found = fp("impl.broken:RaisingAdamW")
    for answer in found.answers.values():
        assert answer.value.startswith(UNDETERMINED) and "RuntimeError" in answer.value
        assert not answer.confident
    assert found.conventions_text() == "default"
    json.dumps(found.as_dict())


def test_an_unknown_defect_is_no_known_convention() -> None:
    found = fp("impl.mutants.decouple:L2InGradient")
    assert found.answers["coupling"].value.startswith("none of the known")


@pytest.mark.parametrize("target, compute", [
    ("torch-loop", "computes in float32, stores bfloat16"),
    ("impl.mutants.dtype:Bfloat16Arithmetic", "computes in bfloat16")])
def test_bf16_precision(target: str, compute: str) -> None:
    answer = fp(target, "bfloat16").answers["precision"]
    assert answer.value.startswith(compute + ";"), answer
    assert "decay-only steps lost to rounding" in answer.value
    assert fp(target, "bfloat16").answers["eps"].value == "after"


def test_bf16_hyperparameters_rounded_are_reported() -> None:
    answer = fp("impl.conventions:HyperparametersInParamDtype", "bfloat16").answers["precision"]
    assert "beta2=0.999 -> 1.0" in answer.value, answer


def test_cli_prints_table_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--impl=impl.mutants.bias:GlobalCounter"]) == 4  # AdamW, another convention
    out = capsys.readouterr().out
    assert "| counter | global |" in out
    assert "--conventions=counter=global" in out


def test_cli_bad_impl_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--impl=no.such.module:Thing"]) == 2
    err = capsys.readouterr().err
    assert "nothing found" in err and "Traceback" not in err


def test_a_hanging_implementation_is_an_answer() -> None:
    found = fingerprint(resolve("impl.broken:HangingAdamW"), timeout=0.5)
    assert all(a.value.startswith(UNDETERMINED) and "did not return" in a.value
               for a in found.answers.values()), found.table()


def test_conventions_auto_judges_against_the_fingerprint() -> None:
    from tests.suite import run_suite
    target = "--impl=impl.conventions:EpsHatAdamW"
    assert run_suite(target, "-k", "step_one").rc == pytest.ExitCode.TESTS_FAILED
    assert run_suite(target, "--conventions=auto", "-k", "step_one").rc == pytest.ExitCode.OK


# --- optimizers nobody named: an honest answer from behaviour, never a crash --------------------

@pytest.mark.parametrize("target, says", [
    ("torch.optim.SGD", "follow rule sgd of the spec"),
    ("torch.optim.Adamax", "follow rule adamax of the spec"),  # Adam's step at t=1, not after
    ("torch.optim.NAdam", "follow no rule of the spec"),
    ("impl.unknown:LionLike", "follow no rule of the spec"),
    ("impl.unknown:FrozenOptimizer", "follow no rule of the spec"),
    ("impl.broken:NaNAdamW", "non-finite parameters"),
])
def test_not_an_adam_family_rule_is_said(target: str, says: str) -> None:
    found = fp(target)
    rule = found.answers["rule"]
    assert rule.value.startswith("not an Adam-family rule") and says in rule.value, found.table()
    verdict = found.verdict()
    assert verdict.code == 1 and "no convention of docs/conventions.md applies" in verdict.text
    for name in ("coupling", "eps", "counter", "moments", "amsgrad"):
        assert found.answers[name].value.startswith("not applicable"), found.table()
    assert found.conventions_text() == "default"


def test_no_rule_names_the_nearest() -> None:
    found = fp("torch.optim.NAdam")
    assert found.answers["rule"].nearest.startswith("adam, "), found.answers["rule"]
    assert "nearest: adam, " in found.verdict().text


def test_a_frozen_optimizer_is_not_a_silent_pass() -> None:
    assert "the parameters never moved" in fp("impl.unknown:FrozenOptimizer").answers[
        "rule"].evidence


@pytest.mark.parametrize("target, says", [
    ("impl.unknown:WrongShapeAdapter", "gave parameter 0 with shape (3,), created with shape"),
    ("impl.unknown:NoParamsAdapter", "params() returned NoneType None"),
    ("impl.unknown:StringParamsAdapter", "gave parameter 0 as str 'not a number'"),
    ("impl.broken:RaisingConstructor", "raised ImportError in creating the optimizer"),
])
def test_a_target_that_gives_no_numbers_could_not_be_driven(target: str, says: str) -> None:
    verdict = fp(target).verdict()
    assert verdict.code == 3 and verdict.text.startswith("could not drive the target: "), verdict
    assert says in verdict.text, verdict


def test_the_verdict_of_adamw_and_adam_l2() -> None:
    verdict = fp("torch-loop").verdict()
    assert (verdict.code, verdict.text) == (0, "AdamW (decoupled weight decay); conventions: "
                                               "default")
    verdict = fp("torch.optim.Adam").verdict()
    assert verdict.code == 1 and verdict.text.startswith("Adam+L2"), verdict


@pytest.mark.parametrize("target, text", [
    ("impl.conventions:EpsHatAdamW", "AdamW (decoupled weight decay); conventions: eps=hat"),
    ("impl.conventions:CorrectedMaxAMSGrad", "AdamW (decoupled weight decay); conventions: "
                                             "default; amsgrad=corrected_max"),
])
def test_the_verdict_of_adamw_under_other_conventions(target: str, text: str) -> None:
    verdict = fp(target).verdict()
    assert (verdict.code, verdict.text) == (4, text)


@pytest.mark.parametrize("argv, code, says", [
    (["--impl=torch-loop"], 0, "verdict: AdamW"),
    (["--impl=torch.optim.SGD"], 1, "verdict: not an Adam-family rule"),
    (["--impl=impl.broken:RaisingAdamW"], 3, "verdict: could not drive the target: the "
                                             "implementation raised RuntimeError in step()"),
])
def test_cli_exit_codes(capsys: pytest.CaptureFixture[str], argv: list[str], code: int,
                        says: str) -> None:
    assert main(argv) == code
    out = capsys.readouterr().out
    assert says in out and "| rule |" in out and "Traceback" not in out, out


@pytest.mark.parametrize("impl", ["math.sqrt", "torch.optim", "nonexistent.module"])
def test_cli_garbage_is_a_usage_error(capsys: pytest.CaptureFixture[str], impl: str) -> None:
    assert main([f"--impl={impl}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --impl={impl!r}") and "Traceback" not in err, err


def test_cli_json_carries_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--impl=impl.unknown:FrozenOptimizer", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == 1 and out["verdict"].startswith("not an Adam-family rule")


def test_cli_nonpositive_timeout_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--impl=torch-loop", "--impl-timeout=0"]) == 2
    assert "--impl-timeout=0" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--impl=torch-loop", "--device=tpu"], "error: --device='tpu': accepted values are cpu, "
                                            "cuda"),
    (["--impl=torch-loop", "--dtype=float8"], "error: --dtype='float8': accepted values are "
                                              "float32, float64, bfloat16, float16"),
    (["--dtype=float32"], "error: the following arguments are required: --impl"),
])
def test_cli_bad_option_is_one_usage_line(capsys: pytest.CaptureFixture[str], argv: list[str],
                                          says: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == says + "\n" and captured.out == "", captured


def test_cli_help_states_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for code in range(5):
        assert f"\n  {code}  " in out, out
    assert "docs/conventions.md" in out


def test_lbfgs_is_driven_with_a_closure() -> None:
    found = fp("torch.optim.LBFGS")
    assert found.answers["rule"].value.startswith("not an Adam-family rule"), found.table()


@pytest.mark.parametrize("target, coupling, rule", [
    ("impl.unknown:chained_adam_l2", "L2", "adam_l2"),   # the decay before scale_by_adam
    ("impl.unknown:masked_adamw", "none", "adam"),      # a mask that decays nothing
])
def test_optax_as_users_build_it(target: str, coupling: str, rule: str) -> None:
    pytest.importorskip("optax")
    found = fp(target)
    assert found.answers["coupling"].value == coupling, found.table()
    assert found.answers["counter"].value.startswith("not applicable"), found.table()
    assert found.rule_name() == rule and found.verdict().code == 1, found.verdict()


def test_optax_sgd_is_driven_and_named() -> None:
    pytest.importorskip("optax")
    assert "follow rule sgd" in fp("optax.sgd").answers["rule"].value


def test_amsgrad_fixed_on_is_still_the_adam_family() -> None:
    found = fp("torch.optim.Adam(amsgrad=True)")
    assert found.answers["rule"].value == "Adam family", found.table()
    assert "amsgrad=raw_max 0.0" in found.answers["rule"].evidence or \
        found.answers["rule"].confident, found.answers["rule"]
    assert found.spec_rule() == "adam_l2"


def test_spec_rule_of_another_rule() -> None:
    assert fp("torch.optim.SGD").spec_rule() == "sgd"
    assert fp("torch.optim.Adamax").spec_rule() == "adamax"
    assert fp("torch.optim.NAdam").spec_rule() is None


# --- the runner: each probe is given the answers it names, and only those ---------------------

def test_each_probe_needs_only_answers_of_earlier_probes() -> None:
    from adamw_conformance.tools.fingerprint.runner import PLAN
    answered: set[str] = set()
    for probe, _ in PLAN:
        assert set(probe.needs) <= answered, (probe.name, probe.needs, answered)
        answered |= set(probe.answers)
    assert answered == set(PROPERTIES) - {"rule"}


def test_a_probe_is_given_only_what_it_needs() -> None:
    from adamw_conformance.spec.conventions import Convention
    from adamw_conformance.tools.fingerprint.runner import given
    from adamw_conformance.tools.fingerprint.target import Given
    answers = {"coupling": Answer("L2", "", True), "eps": Answer("hat", "", True),
               "counter": Answer("none of the known conventions", "", False)}
    assert given(answers, ("eps",)) == Given("adamw", Convention(eps="hat"))
    assert given(answers, ("coupling", "eps", "counter")) == Given("adam_l2",
                                                                   Convention(eps="hat"))
