"""Symbolic facts behind the other rules' judging: the Adam-family kernel orders equal their
rule (Adam+L2, Adam), and the scale-free rules scale their state as
`adamw_conformance.core.rules` says."""

from __future__ import annotations

import pytest
import sympy as sp
from adamw_conformance.core.rules import SCALE_FREE, state_degree
from adamw_conformance.spec import registry
from adamw_conformance.spec import symbols as S
from adamw_conformance.spec.conventions import DEFAULT, Convention
from adamw_conformance.spec.formats import FLOAT32
from adamw_conformance.spec.markers import StoreParam, StoreState, strip
from adamw_conformance.spec.orders import adam_orders
from adamw_conformance.spec.orders_other import TRACED, other_orders

from tests.test_facts import _order_points, branches, differs_at, equal_at, points


@pytest.mark.parametrize("amsgrad", [False, True], ids=["plain", "amsgrad"])
@pytest.mark.parametrize(("name", "coupling"), [("adam_l2", "l2"), ("adam", "none")])
def test_adam_orders_equal_the_rule(name, coupling, amsgrad):
    convention = Convention(amsgrad="raw_max") if amsgrad else DEFAULT
    rule = registry.get(name, convention)
    capturable = ("torch_capturable", "torch_capturable_foreach")
    orders = adam_orders(rule, coupling, convention, FLOAT32, declared=capturable)
    assert {"straightforward", "torch_loop", "torch_foreach", "fused", "general",
            *capturable} == {o.name for o in orders}
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


def _other_points(seed: int) -> list[dict]:
    # t = 1 (SGD's buffer is the gradient) and t > 1; alpha on both sides of 1/2 (the lerp of
    # centered RMSProp's gradient average has one formula on each side).
    pts = points(seed, 4)
    for p, a in zip(pts, (sp.Rational(3, 4), sp.Rational(1, 4), sp.Rational(63, 64),
                          sp.Rational(1, 64)), strict=True):
        p[S.alpha] = a
    return pts


@pytest.mark.parametrize("maximized", [False, True], ids=["plain", "maximize"])
@pytest.mark.parametrize("name", TRACED)
def test_other_orders_equal_the_rule(name, maximized):
    """torch's traced SGD/Adagrad/RMSprop orders (spec/orders_other.py), markers stripped, are
    their rule: evaluated exactly at rational points, every Piecewise (t = 1, the lerp's
    branch) taken as the point says."""
    rule = registry.get(name, maximized=maximized)
    orders = other_orders(rule)
    assert [o.name for o in orders] == ["straightforward", "torch_loop", "torch_foreach"]
    pts = _other_points(30)
    for order in orders:
        assert set(order.tree) == set(rule.update), (name, order.name)
        for out, tree in order.tree.items():
            plain = strip(tree)
            assert not plain.atoms(StoreParam, StoreState)
            assert equal_at(plain, rule.update[out], pts), (name, order.name, out)


def test_other_order_check_has_power():
    """The comparison above can fail: an order of one rule is not another rule, and the
    un-maximized order is not the maximized rule."""
    pts = _other_points(31)
    pairs = [("sgd", "momentum"), ("momentum", "nesterov"),
             ("rmsprop", "rmsprop_centered"), ("rmsprop_momentum", "rmsprop")]
    for mine, other in pairs:
        tree = strip(other_orders(registry.get(mine))[1].tree["theta"])
        assert differs_at(tree, registry.get(other).update["theta"], pts), (mine, other)
    for name in ("adagrad", "sgd"):
        tree = strip(other_orders(registry.get(name))[2].tree["theta"])
        assert differs_at(tree, registry.get(name, maximized=True).update["theta"], pts), name
