"""The convention fingerprint names, from behaviour alone, the conventions each implementation
follows (impl/conventions.py: correct AdamWs of the non-default conventions; mutants whose defect
is a named convention), and never crashes on a target that raises or hides its state."""

from __future__ import annotations

import json
from functools import cache

import pytest

from conformance.fingerprint import UNDETERMINED, Fingerprint, fingerprint, main
from conformance.targets import resolve


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
    assert main(["--impl=impl.mutants.bias:GlobalCounter"]) == 0
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
