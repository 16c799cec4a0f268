"""The kill matrix: every mutant of the zoo (impl.mutants.ZOO) fails the suite, and the property
its registry entry names is among the failures, with a message that names it.

In CI each mutant runs only its named property, in-process with the ci profile (~0.5 s each);
`python -m pytest -m slow -k kill_matrix` runs the whole catalogue against every mutant, and
`python -m adamw_conformance.tools.detection` reports which properties killed each one.

The other tests here keep the specific claims the per-family kill tests made: what a message
says, that a mutant which is really a named convention passes once it is declared, and that a
property fails only where its defect shows.
"""

from __future__ import annotations

import re

import pytest

from impl.mutants import ZOO, Mutant, by_name
from tests.suite import run_suite


def _ids(mutants: tuple[Mutant, ...]) -> list[str]:
    return [m.name for m in mutants]


def test_registry_is_sound() -> None:
    """Unique names, at least 25 defects, each docstring names the property the registry does."""
    names = _ids(ZOO)
    assert len(names) == len(set(names)), "duplicate mutant names"
    assert len(ZOO) >= 25
    catalogue = re.compile(r"^(exact|bias|scale|decouple|groups|schedule|state|input|dtype|shard)"
                           r"\.[a-z_0-9]+$")
    for m in ZOO:
        assert catalogue.match(m.kills), f"{m.name}: {m.kills!r} is not a catalogue id"
        if m.name != "torch.optim.Adam":  # torch's own docstring does not know about us
            assert f"Killed by {m.kills}" in m.doc, f"{m.name}: docstring does not name {m.kills}"


@pytest.mark.parametrize("mutant", ZOO, ids=_ids(ZOO))
def test_named_property_kills(mutant: Mutant) -> None:
    out = run_suite(mutant.node, *mutant.argv(), reuse=True)
    assert out.rc == pytest.ExitCode.TESTS_FAILED, (
        f"{mutant.name} survived {mutant.kills}: {out.results}")
    assert any(mutant.kills in msg for msg in out.messages.values()), out.messages


@pytest.mark.slow
@pytest.mark.parametrize("mutant", ZOO, ids=_ids(ZOO))
def test_whole_catalogue_kills(mutant: Mutant) -> None:
    """The full row of the matrix: the whole catalogue, and the named property among the
    failures."""
    out = run_suite(*mutant.argv())
    assert out.rc == pytest.ExitCode.TESTS_FAILED, out.results
    assert any(mutant.node in nodeid for nodeid in out.failed()), out.failed()


# --- what the messages say ----------------------------------------------------------------------

SAYS: dict[str, str | tuple[str, str]] = {
    # mutant -> text its named property's message must contain (and the parametrization to run)
    "NoBiasCorrection": "t=1",
    "CounterStartsAtOne": "t=1",
    "AdvancesWithoutGradient": ("had no gradient", "[late-start]"),
    "GlobalCounter": ("had no gradient", "[late-start]"),
    "Bfloat16Counter": ("stored counter now reads", "[past-256]"),
    "Float16Counter": ("stored counter now reads", "[past-2048]"),
    "EpsInsideSqrt": "not bitwise",
    "torch.optim.Adam": "weight decay reached the moments",
    "CoupledDecay": "weight decay reached the moments",
    "DecaysSkippedSteps": "must be skipped",
    "ignores_found_inf": "must be skipped",
    "IgnoresFoundInfAfterUnscale": ("must be skipped", "[unscale]"),
    "Bfloat16Arithmetic": "compute=float32",
    "ZeroNonFinite": "not be replaced by a finite number",
    "NormClipped": "other elements left the spec's bound",
    "LoadResetsStep": "load_state_dict",
    "ForgetsSecondMoment": "load_state_dict",
    "BetaPowerNotSaved": "loading into a fresh optimizer",
}


@pytest.mark.parametrize("name", sorted(SAYS))
def test_message_names_the_defect(name: str) -> None:
    m = by_name(name)
    says, part = SAYS[name] if isinstance(SAYS[name], tuple) else (SAYS[name], "")
    # The named-property run (test_named_property_kills), read at the parametrization `part`:
    # derandomized, that test case draws the same examples whichever others run with it.
    out = run_suite(m.node, *m.argv(), reuse=True)
    messages = {k: v for k, v in out.messages.items() if k.endswith(part)}
    assert out.rc == pytest.ExitCode.TESTS_FAILED and messages, out.results
    assert all(says in msg for msg in messages.values()), messages


@pytest.mark.parametrize("prop", ["test_moments", "test_uniform", "test_decay_only"])
def test_adam_l2_is_not_adamw(prop: str) -> None:
    """torch.optim.Adam with weight_decay > 0 couples the decay: judged as an AdamW (--rule=adamw;
    by default it is judged as the Adam+L2 it is), every decouple.* property says so."""
    out = run_suite(f"conformance/test_decouple.py::{prop}", "--impl=torch.optim.Adam",
                    "--rule=adamw", reuse=True)
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "Adam+L2 (coupled decay" in message


@pytest.mark.parametrize(("name", "says"), [
    ("NoValidation", "accepted it: a ValueError is expected"),
    ("AssertValidation", "raised AssertionError"),
])
def test_validation_fails_for_every_hyperparameter(name: str, says: str) -> None:
    m = by_name(name)
    out = run_suite(m.node, *m.argv(), reuse=True)
    assert len(out.failed()) == 5, out.results
    assert all(says in msg for msg in out.messages.values()), out.messages


# --- conventions, not bugs, once declared -------------------------------------------------------

DECLARED = [  # (mutant, the node it fails by default, the declaration that makes it correct)
    ("GlobalCounter", "conformance/test_bias.py::test_counter[late-start]", "counter=global"),
    ("GroupCounter", "conformance/test_bias.py::test_counter[late-start]", "counter=group"),
    ("EpsInsideSqrt", "conformance/test_scale.py::test_power_of_two", "eps=root"),
    ("EpsHat", "conformance/test_bias.py::test_step_one", "eps=hat"),
    ("EpsFloor", "conformance/test_bias.py::test_step_one", "eps=floor"),
    ("DecayWithoutLR", "conformance/test_decouple.py::test_decay_only",
     "decay_coupling=independent"),
]


@pytest.mark.parametrize(("name", "node", "convention"), DECLARED, ids=[d[0] for d in DECLARED])
def test_passes_when_declared(name: str, node: str, convention: str) -> None:
    out = run_suite(node, *by_name(name).argv(), f"--conventions={convention}")
    assert out.rc == pytest.ExitCode.OK, out.messages


def test_bf16_arithmetic_passes_when_declared_and_is_reported(capsys) -> None:
    out = run_suite("conformance/test_dtype.py::test_precision", *by_name(
        "Bfloat16Arithmetic").argv(), "--compute-dtype=bfloat16", "-rA")
    assert out.rc == pytest.ExitCode.OK, out.messages
    assert "computes in bfloat16:" in capsys.readouterr().out


def test_reference_is_reported_as_float32_compute(capsys) -> None:
    out = run_suite("conformance/test_dtype.py::test_precision",
                    "--impl=impl.reference.optimizer:ReferenceAdamW", "--dtype=bfloat16", "-rA")
    assert out.rc == pytest.ExitCode.OK, out.messages
    assert "computes in float32 and stores bfloat16" in capsys.readouterr().out


# --- a property fails where its defect shows, and only there ------------------------------------

@pytest.mark.parametrize(("name", "node"), [
    ("Float16Counter", "conformance/test_bias.py::test_counter[past-256]"),
    ("ZeroNonFinite", "conformance/test_exact.py"),
    ("NormClipped", "conformance/test_exact.py"),
    ("Bfloat16Arithmetic", "conformance/test_dtype.py::test_precision"),  # float32: skipped
])
def test_correct_where_the_defect_does_not_show(name: str, node: str) -> None:
    m = by_name(name)
    args = [a for a in m.argv() if not a.startswith("--dtype")]
    out = run_suite(node, *args)
    assert out.rc == pytest.ExitCode.OK, out.messages
