"""What an adapter declares is read in one place (core.targets.capabilities) into one dataclass
(adapters.base.Capabilities); catalogue ids come from one function; the session state that
strategies and verdicts read is restored when a run ends."""

from __future__ import annotations

import types

import pytest
from adamw_conformance.adapters.base import Capabilities
from adamw_conformance.core import catalogue, context, record
from adamw_conformance.core.targets import TargetError, capabilities, resolve


def test_undeclared_capabilities_take_the_documented_defaults() -> None:
    caps = capabilities(types.SimpleNamespace(create=lambda setup: None))
    assert caps == Capabilities()
    assert caps.none_grads and caps.rule is None and caps.orders == ()
    assert not caps.accepts("amsgrad") and caps.receives("betas")


def test_attribute_declarations_are_normalised() -> None:
    adapter = types.SimpleNamespace(
        create=lambda setup: None, options={"amsgrad": False}, none_grads=False,
        orders=["keras"], conformance_rule="adam", pinned={"beta1": 0.9},
        fixed={"amsgrad": True})
    caps = capabilities(adapter)
    assert caps.accepts("amsgrad") and not caps.accepts("maximize")
    assert (caps.none_grads, caps.orders, caps.rule) == (False, ("keras",), "adam")
    assert caps.pinned == {"beta1": 0.9} and caps.fixed == {"amsgrad": True}
    declared = Capabilities(none_grads=False)
    assert capabilities(types.SimpleNamespace(capabilities=declared)) is declared


def test_torch_adapter_declares_its_rule_keywords_and_pins() -> None:
    caps = capabilities(resolve("torch.optim.SGD(momentum=0.9)"))
    assert caps.rule == "momentum" and caps.pinned == {"momentum": 0.9}
    assert caps.receives("momentum") and not caps.receives("betas")


def test_a_bad_declaration_is_a_usage_error() -> None:
    with pytest.raises(TargetError, match="orders must be a tuple of order names"):
        resolve("tests.test_protocol:BAD_ORDERS")


BAD_ORDERS = types.SimpleNamespace(create=lambda setup: None, orders="keras")


@pytest.mark.parametrize(("nodeid", "cid"), [
    ("conformance/test_bias.py::test_counter[past-256]", "bias.counter"),
    ("conformance/test_exact.py::test_one_step", "exact.one_step"),
])
def test_catalogue_ids_of_node_ids(nodeid: str, cid: str) -> None:
    assert catalogue.of(nodeid) == cid
    assert catalogue.node(cid) == nodeid.split("[")[0]


def test_a_session_ends_where_it_began() -> None:
    outer = context.current()
    with record.recording() as seen:
        inner = context.begin("sgd", {"momentum": 0.5})
        assert context.current().rule == "sgd" and inner.recorder is seen  # records there too
        record.start()
        assert inner.recorder is not seen
        context.end(inner)
        assert context.current() is outer and outer.recorder is seen
    assert outer.recorder is None and outer.rule == "adamw"
