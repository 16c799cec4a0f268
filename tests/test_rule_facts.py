"""Symbolic facts behind the other rules' judging: the Adam-family kernel orders equal their
rule (Adam+L2, Adam), the scale-free rules scale their state as the rule table
(`adamw_conformance.core.rule_table`) says, and every registered rule's entry describes it."""

from __future__ import annotations

import pytest
import sympy as sp
from adamw_conformance.core import rule_table
from adamw_conformance.core.judge import Model
from adamw_conformance.core.rules import ADAM_FAMILY, L2_COUPLED, SCALE_FREE, state_degree
from adamw_conformance.spec import registry
from adamw_conformance.spec import symbols as S
from adamw_conformance.spec.bounds import Precision
from adamw_conformance.spec.conventions import DEFAULT, Convention
from adamw_conformance.spec.formats import FLOAT32
from adamw_conformance.spec.markers import StoreParam, StoreState, strip
from adamw_conformance.spec.orders_in_play import adam_orders

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
    if name in L2_COUPLED:
        subs[S.weight_decay] = 0
    for out, expr in rule.update.items():
        base = expr.subs(S.weight_decay, 0) if S.weight_decay in subs else expr
        want = base if out == "theta" else k ** state_degree(name, out) * base
        scaled = expr.xreplace(subs)
        for kv in (2, sp.Rational(1, 8)):
            pts = _order_points(22)
            assert equal_at(scaled.subs(k, kv), want.subs(k, kv), pts), (name, out)


def _other_points(seed: int) -> list[dict]:
    # t = 1 (SGD's buffer is the gradient) and t > 1; alpha and beta1 on both sides of 1/2 (the
    # lerps of centered RMSProp's gradient average and Adamax's m have one formula on each side);
    # Adamax's norm u = 0 (|g| + eps wins the maximum) and u = 1000 (beta2 u wins).
    pts = points(seed, 4)
    for p, a, u in zip(pts, (sp.Rational(3, 4), sp.Rational(1, 4), sp.Rational(63, 64),
                             sp.Rational(1, 64)), (0, 1000, 0, 1000), strict=True):
        p[S.alpha] = p[S.beta1] = a
        p[S.u] = u
    return pts


def other_orders(name: str, maximized: bool = False) -> tuple:
    """The orders the judge bounds rule `name` in (its rule table entry), in float32."""
    return rule_table.info(name).orders(Model(name, maximize=maximized), Precision())


#: The rules outside the Adam family whose torch eager paths are traced (spec/orders_other.py).
TRACED = [n for n in registry.names() if n not in ADAM_FAMILY and len(other_orders(n)) > 1]


def test_traced_rules():
    assert TRACED == ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "rmsprop_momentum",
                      "rmsprop_centered", "rmsprop_centered_momentum", "adamax"]


@pytest.mark.parametrize("maximized", [False, True], ids=["plain", "maximize"])
@pytest.mark.parametrize("name", TRACED)
def test_other_orders_equal_the_rule(name, maximized):
    """torch's traced SGD/Adagrad/RMSprop orders (spec/orders_other.py), markers stripped, are
    their rule: evaluated exactly at rational points, every Piecewise (t = 1, the lerp's
    branch) taken as the point says."""
    rule = registry.get(name, maximized=maximized)
    orders = other_orders(name, maximized)
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
             ("rmsprop", "rmsprop_centered"), ("rmsprop_momentum", "rmsprop"),
             ("adamax", "adam_l2")]
    for mine, other in pairs:
        tree = strip(other_orders(mine)[1].tree["theta"])
        assert differs_at(tree, registry.get(other).update["theta"], pts), (mine, other)
    for name in ("adagrad", "sgd", "adamax"):
        tree = strip(other_orders(name)[2].tree["theta"])
        assert differs_at(tree, registry.get(name, maximized=True).update["theta"], pts), name


# --- Adamax ---------------------------------------------------------------------------------------

def test_adamax_first_step_is_adams():
    """From a fresh state (m = u = 0) at t = 1 Adamax takes Adam's first step with the same L2
    decay, theta - lr d/(|d| + eps): its norm |d| + eps is Adam's sqrt(v_hat) + eps there, and
    m is bias-corrected alike."""
    adamax = registry.get("adamax").update["theta"].subs({S.t: 1, S.m: 0, S.u: 0})
    adam = registry.get("adam_l2").update["theta"].subs({S.t: 1, S.m: 0, S.v: 0})
    assert equal_at(adamax, adam, points(40, 4))


def test_adamax_norm_needs_no_bias_correction():
    """The norm of a constant gradient d stays |d| + eps at every t (beta2 u <= u): unlike
    Adam's v it starts unbiased, so only m is corrected, and it is not an average but a
    maximum: the step differs from Adam's after t = 1."""
    rule = registry.get("adamax")
    d = S.g + S.weight_decay * S.theta
    steady = rule.update["u"].subs(S.u, sp.Abs(d) + S.eps)
    assert equal_at(steady, sp.Abs(d) + S.eps, points(41, 4))
    later = points(42, 4, fixed={S.t: 3})
    assert differs_at(rule.update["theta"], registry.get("adam_l2").update["theta"], later)


# --- the rule table -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", registry.names())
def test_table_entry_describes_the_rule(name):
    """Every registered rule has an entry whose state is the rule's (the Adam family's with
    AMSGrad's vmax, which is drawn from v), with a replay range for each state it draws, and
    whose decay field says whether the rule has weight decay."""
    entry = rule_table.info(name)
    rule = registry.get(name)
    own = {s.name for s in rule.state}
    extra = {"vmax"} if entry.family == "adam" else set()
    assert set(entry.state) == own | extra, name
    assert all(entry.state[s].replay is not None for s in own), name
    assert (entry.decay is not None) == (S.weight_decay in rule.hyperparameters), name
    assert entry.applies <= set(rule_table.RESTRICTED), name
    assert set(entry.fixed) <= set(rule.hyperparameter_names), name
    if entry.family == "adam":  # the Adam family is where the conventions live
        assert registry.get(name, Convention(eps="hat")).name == f"{name}[eps=hat]"


@pytest.mark.parametrize("name", [n for n in registry.names() if rule_table.info(n).torch])
def test_table_names_torch(name):
    """Each torch class of an entry exists, selects the rule with its keywords, and keeps the
    rule's state under the keys the entry names (after one step; the counter aside)."""
    import numpy as np
    import torch
    from adamw_conformance.adapters.torch_optim import torch_rule
    from adamw_conformance.core.strategies import typical_hyper

    entry = rule_table.info(name)
    hyper = typical_hyper(name)
    for form in entry.torch:
        cls = getattr(torch.optim, form.name)
        fixed = {k: hyper.get(k, True) for k, on in form.keywords.items() if on}
        assert torch_rule(cls, fixed) == name, (name, form)
        kw = {"lr": hyper["lr"], **{k: v for k, v in hyper.items()
                                     if k in ("eps", "weight_decay", "momentum", "dampening",
                                              "alpha", "lr_decay")}, **fixed}
        if "beta1" in hyper:
            kw["betas"] = (hyper["beta1"], hyper["beta2"])
        p = torch.nn.Parameter(torch.tensor(np.ones(3)))
        opt = cls([p], **kw)
        p.grad = torch.ones_like(p)
        opt.step()
        keys = {k for k, x in opt.state[p].items() if isinstance(x, torch.Tensor)
                and x.shape == p.shape}
        assert keys == {entry.state[s.name].torch_key for s in registry.get(name).state}, (
            name, form, keys)
