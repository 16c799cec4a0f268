"""The root-cause summary and the short failure, from their parts: what the failures share, what
the fingerprint's verdict says about them, and what a failure keeps of pytest's and Hypothesis'
text."""

from __future__ import annotations

from dataclasses import dataclass, field

from adamw_conformance.core import catalogue
from adamw_conformance.core.session import Session
from adamw_conformance.report.summary import (
    Failure,
    Findings,
    fingerprint_lines,
    in_common,
    root_cause,
    shorten,
)
from adamw_conformance.spec.conventions import Convention


@dataclass
class Verdict:
    code: int
    text: str


@dataclass
class FakeFingerprint:
    rule: str | None
    found: Convention = field(default_factory=Convention)
    text: str = "AdamW (decoupled weight decay); conventions: default"
    undriven: str | None = None

    def spec_rule(self) -> str | None:
        return self.rule

    def convention(self) -> Convention:
        return self.found

    def verdict(self) -> Verdict:
        return Verdict(0, self.text)


def command(rule: str, conventions: str) -> str:
    return f"CMD --rule={rule} --conventions={conventions}"


def test_a_convention_the_run_did_not_judge_is_named_with_its_command() -> None:
    fp = FakeFingerprint("adamw", Convention(eps="root"))
    lines = fingerprint_lines(fp, "adamw", "default", command)
    assert lines[0] == ("the fingerprint names the likely cause: the target follows eps=root, "
                        "where the run judged eps=after")
    assert "eps inside the square root" in lines[1]
    assert "CMD --rule=adamw --conventions=eps=root" in lines[2]


def test_another_rule_is_named_with_its_command() -> None:
    fp = FakeFingerprint("adam_l2", text="Adam+L2 (weight decay in the gradient)")
    lines = fingerprint_lines(fp, "adamw", "default", command)
    assert "the target follows rule adam_l2, where the run judged rule adamw" in lines[0]
    assert "CMD --rule=adam_l2 --conventions=default" in lines[1]


def test_what_was_judged_names_nothing() -> None:
    fp = FakeFingerprint("adamw", Convention(eps="root"))
    [line] = fingerprint_lines(fp, "adamw", "eps=root", command)
    assert "names no convention that explains the failures" in line


def test_an_undriven_target_names_nothing() -> None:
    fp = FakeFingerprint(None, text="could not drive the target: it raised", undriven="raised")
    [line] = fingerprint_lines(fp, "adamw", "default", command)
    assert line.startswith("the fingerprint names no rule or convention that explains them")


def test_what_the_failures_share() -> None:
    bound = "p: x at step t=1\n  parameter 0: theta[3]: got 1.0, oracle 2.0"
    raised = "p: the implementation raised RuntimeError in step(): no"
    assert in_common([Failure("a.b", "t1", bound), Failure("a.c", "t2", bound)]) == [
        "every failure is a value outside the derived bound, in theta only",
        "every step-level failure is at t=1, the first step from fresh state"]
    assert in_common([Failure("a.b", "t", raised)] * 3) == [
        "every failure: the implementation raised RuntimeError in step(): no"]


def test_the_fingerprint_runs_only_when_something_failed() -> None:
    calls = []

    def fp() -> FakeFingerprint:
        calls.append(1)
        return FakeFingerprint("adamw")

    findings = Findings()
    assert root_cause(findings, fp, "adamw", "default", command) == [] and not calls
    findings.add("bias.step_one", "test_bias.py::test_step_one", "x")
    lines = root_cause(findings, fp, "adamw", "default", command)
    assert lines[0] == "1 failed test in 1 property: bias.step_one" and calls == [1]


def test_a_failure_keeps_its_message_and_a_line_per_draw() -> None:
    e = AssertionError("prop.name: got 1\n  reproduce: pytest ...\nassert not [(0, Mismatch(\n"
                       " +  where [...] = StepOutcome(params=[array([1.0, 2.0])])")
    e.add_note("Failing test case: test_x(\n    cfg=Config(a),\n    data=data(...),\n)")
    e.add_note("Draw 1 (hyper): {'lr': 0.1,\n 'eps': 1e-08}")
    e.add_note("You can reproduce this test case by temporarily adding "
               "@reproduce_failure('6', b'AX') as a decorator on your test function")
    shorten(e)
    assert str(e) == "prop.name: got 1\n  reproduce: pytest ..."
    assert e.__notes__ == ["Failing test case: test_x(cfg=Config(a), data=data(...))",
                           "Draw 1 (hyper): {'lr': 0.1, 'eps': 1e-08}"]


def test_the_reproduce_line_carries_every_option() -> None:
    s = Session("torch.optim.AdamW(foreach=True)", "bfloat16", "cuda", "float32", "adamw",
                conventions="eps=hat", xfails="keras", profile="dev", seed="123", timeout=5.0)
    assert s.reproduce("bias.counter") == (
        "pytest --pyargs adamw_conformance.test_bias::test_counter "
        "--impl='torch.optim.AdamW(foreach=True)' --dtype=bfloat16 --device=cuda "
        "--compute-dtype=float32 --rule=adamw --conventions=eps=hat --xfails=keras "
        "--impl-timeout=5 --hypothesis-profile=dev --hypothesis-seed=123")
    assert catalogue.pyargs("exact") == "adamw_conformance.test_exact"
