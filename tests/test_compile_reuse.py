"""The shape set and the value sets (conformance/core/compile_reuse.py, core/strategies.py:
SHAPE_SET, value_sets): a target found compiling its step once per shape takes every property's
shapes from the small set, one found compiling once per value of some hyperparameters takes them
from a few sets of values; one that compiles a dynamic kernel, or nothing, draws as before.

Nothing is compiled here: the counted models of impl/compiled.py bump torch.compile's count of
graphs as a compiler would. The real torch.compile is the slow test's.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pytest
from adamw_conformance.core import compile_reuse, context
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Model
from adamw_conformance.core.strategies import (
    SHAPE_SET,
    VALUE_SETS,
    shape_pool,
    shapes,
    sized,
    value_sets,
)
from adamw_conformance.core.targets import resolve

from impl import compiled
from tests.suite import run_suite


@pytest.fixture
def counter() -> Iterator[collections.Counter]:
    """torch.compile's count of graphs, as it was before the test once the test ends."""
    from torch._dynamo.utils import counters

    before = dict(counters["stats"])
    for seen in compiled.SEEN.values():
        seen.clear()
    yield counters["stats"]
    counters["stats"].clear()
    counters["stats"].update(before)


def _probed(target: str) -> compile_reuse.Recompiles:
    return compile_reuse.recompiles(Config(resolve(target), Model("adamw"), impl_text=target))


def _found(target: str) -> bool:
    return _probed(target).per_shape


def test_probe_tells_per_shape_from_dynamic(counter: collections.Counter) -> None:
    assert _probed("impl.compiled:PerShapeCountedAdamW") == compile_reuse.Recompiles(True, ())
    assert not _found("impl.compiled:DynamicCountedAdamW")
    assert not _found("torch.optim.AdamW")  # compiles nothing: not stepped by the probe


def test_probe_finds_the_hyperparameters_compiled_per_value(
        counter: collections.Counter) -> None:
    assert _probed("impl.compiled:PerValueCountedAdamW") == compile_reuse.Recompiles(
        True, compiled.COMPILED)  # lr, like torchao's tensor, compiles nothing new


def test_value_sets_are_the_runs() -> None:
    """The same sets for the same seed (in every process of a run), others for another seed;
    the first three are notable values (the last the ranges' edges); every weight decay is
    > 0."""
    names = compiled.COMPILED
    ci = value_sets(names, None)
    assert len(ci) == VALUE_SETS and ci == value_sets(names, None)
    assert ci[0] == {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}
    assert all(s["weight_decay"] > 0.0 for s in ci)
    assert ci[2] == {"beta1": 0.99, "beta2": 1 - 1e-6, "eps": 1.0, "weight_decay": 1.0}
    assert value_sets(names, "7")[:3] == ci[:3] and value_sets(names, "7")[3:] != ci[3:]
    assert all(set(s) == set(names) for s in ci)


def test_sized_keeps_each_shape_kind() -> None:
    session = context.begin("adamw")
    try:
        assert sized((48,)) == (48,) and sized((2, 2)) == (2, 2)  # other targets: as drawn
        assert shape_pool() is shapes
        session.shape_set = True
        got = {s: sized(s) for s in ((5,), (48,), (64,), (2, 2), (3, 5, 7), (), (0,), (1,))}
        assert got == {(5,): (32,), (48,): (32,), (64,): (32,), (2, 2): (2, 3),
                       (3, 5, 7): (2, 3), (): (), (0,): (0,), (1,): (1,)}
        assert set(got.values()) <= set(SHAPE_SET)
    finally:
        context.end(session)


def test_per_shape_target_steps_the_shape_set_only(counter: collections.Counter) -> None:
    """groups.no_decay (its own six shapes) and decouple.decay_only (the drawn ones) on a target
    that compiles per shape: every shape it is stepped on after the probes is in SHAPE_SET, and
    the summary says why."""
    compiled.SEEN["per_shape"].clear()
    out = run_suite("conformance/test_groups.py::test_no_decay",
                    "conformance/test_decouple.py::test_decay_only",
                    "--impl=impl.compiled:PerShapeCountedAdamW")
    assert out.rc == pytest.ExitCode.OK, out.messages
    # the once-per-run probes: warm-up, layout, quantization, orders, shape, replay
    probes = {(4,), (3,), (4096,), (64,), (5,), (6,), (7,), (2,)}
    assert compiled.SEEN["per_shape"] - probes <= set(SHAPE_SET)


def test_per_value_target_steps_the_value_sets_only(counter: collections.Counter) -> None:
    """decouple.decay_only (drawn hyperparameters, a decay > 0 where they gave 0) and
    groups.order on a target that compiles per value: every value it is stepped with after the
    probes is in the run's sets (a derandomized run's) or one of them without decay (a
    property's decay=False)."""
    compiled.SEEN["per_value"].clear()
    out = run_suite("conformance/test_groups.py::test_order",
                    "conformance/test_decouple.py::test_decay_only",
                    "--impl=impl.compiled:PerValueCountedAdamW")
    assert out.rc == pytest.ExitCode.OK, out.messages
    sets = {tuple({**s, **wd}[n] for n in compiled.COMPILED)
            for s in value_sets(compiled.COMPILED, None) for wd in ({}, {"weight_decay": 0.0})}
    probe_shapes = {(4,), (3,), (4096,), (64,), (5,), (6,), (7,), (2,)}
    stepped = {k[1:] for k in compiled.SEEN["per_value"] if k[0] not in probe_shapes}
    assert stepped and stepped <= sets, stepped - sets


@pytest.mark.slow
def test_torch_compile_with_static_shapes_is_found() -> None:
    """The real compiler: torch's AdamW step under torch.compile(dynamic=False) compiles per
    shape; torch's AdamW, never compiled, is not stepped by the probe."""
    assert _found("impl.compiled:CompiledAdamW")
