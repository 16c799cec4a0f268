"""Symbolic facts behind the other rules' judging: the Adam-family kernel orders equal their
rule (Adam+L2, Adam), and the scale-free rules scale their state as `conformance.rules` says."""

from __future__ import annotations

import pytest
import sympy as sp

from conformance.rules import SCALE_FREE, state_degree
from spec import registry
from spec import symbols as S
from spec.conventions import DEFAULT, Convention
from spec.formats import FLOAT32
from spec.markers import StoreParam, StoreState, strip
from spec.orders import adam_orders
from tests.test_facts import _order_points, branches, differs_at, equal_at


@pytest.mark.parametrize("amsgrad", [False, True], ids=["plain", "amsgrad"])
@pytest.mark.parametrize(("name", "coupling"), [("adam_l2", "l2"), ("adam", "none")])
def test_adam_orders_equal_the_rule(name, coupling, amsgrad):
    convention = Convention(amsgrad="raw_max") if amsgrad else DEFAULT
    rule = registry.get(name, convention)
    orders = adam_orders(rule, coupling, convention, FLOAT32)
    assert {"straightforward", "torch_loop", "torch_foreach", "fused",
            "torch_capturable"} == {o.name for o in orders}
    pts = _order_points(20)
    for order in orders:
        assert set(order.tree) == set(rule.update), order.name
        for out, tree in order.tree.items():
            for branch in branches(strip(tree)):
                assert not branch.atoms(StoreParam, StoreState)
                assert equal_at(branch, rule.update[out], pts), (name, order.name, out)


def test_adam_order_check_has_power():
    # The L2 orders are not AdamW's rule, nor the decoupled orders Adam+L2's.
    pts = _order_points(21)
    l2 = adam_orders(registry.get("adam_l2"), "l2")[1]
    assert differs_at(branches(strip(l2.tree["theta"]))[0],
                      registry.get("adamw").update["theta"], pts)
    aw = adam_orders(registry.get("adamw"), "decoupled")[1]
    assert differs_at(branches(strip(aw.tree["theta"]))[0],
                      registry.get("adam_l2").update["theta"], pts)


@pytest.mark.parametrize("name", sorted(SCALE_FREE))
def test_scale_free_rules_scale_their_state(name):
    """g -> k g, eps -> k eps, each state s -> k^d(s) s (weight_decay 0): theta' is unchanged
    and each new state is k^d(s) times the old one's: what scale.power_of_two relies on."""
    rule = registry.get(name)
    k = sp.Symbol("k", positive=True)
    degree = {s: state_degree(name, s.name) for s in rule.state}
    subs = {S.g: k * S.g, S.eps: k * S.eps, **{s: k**d * s for s, d in degree.items()}}
    if S.weight_decay in rule.hyperparameters and name != "adamw":
        subs[S.weight_decay] = 0
    for out, expr in rule.update.items():
        base = expr.subs(S.weight_decay, 0) if S.weight_decay in subs else expr
        want = base if out == "theta" else k ** state_degree(name, out) * base
        scaled = expr.xreplace(subs)
        for kv in (2, sp.Rational(1, 8)):
            pts = _order_points(22)
            assert equal_at(scaled.subs(k, kv), want.subs(k, kv), pts), (name, out)
