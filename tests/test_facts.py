"""Symbolic facts about the spec, checked with SymPy on the spec's own expressions.

Nothing here re-types an update rule: every expression comes from `spec.registry` (or
`spec.orders`) and is only substituted into. Where a fact *is* an identity between the rule and a
closed form (the step-1 identity, Keras' eps-hat form), the closed form is the statement under test.

Equality is decided either symbolically (`sympy.simplify` of the difference, where that is cheap)
or exactly at random rational points: every symbol gets an exact rational, and the two sides, now
algebraic numbers, must simplify to the same number. A wrong identity fails at almost every point.
"""

from __future__ import annotations

import random
from dataclasses import fields

import pytest
import sympy as sp
from adamw_conformance.spec import registry
from adamw_conformance.spec import symbols as S
from adamw_conformance.spec.conventions import CHOICES, DEFAULT, Convention
from adamw_conformance.spec.formats import FLOAT32, FLOAT64
from adamw_conformance.spec.markers import StoreParam, StoreState, strip
from adamw_conformance.spec.orders import (
    declared_orders,
    expanded,
    fused,
    general,
    keras,
    straightforward,
    torch_capturable,
    torch_capturable_foreach,
    torch_loop,
)
from adamw_conformance.spec.orders_in_play import adamw_orders

k = sp.Symbol("k", positive=True)  # a scale factor
WD = S.weight_decay


# --- helpers -------------------------------------------------------------------------------------

def rational_point(rng: random.Random, t: int | None = None, vmax=None) -> dict:
    """Exact rationals for every symbol, inside each symbol's domain.

    Betas and the like lie in (0, 1); v >= 1 >= gavg^2 keeps centered RMSProp's root real.
    """
    def r(lo: int, hi: int, den: int = 64) -> sp.Rational:
        return sp.Rational(rng.randint(lo * den, hi * den), den)

    def unit() -> sp.Rational:
        return sp.Rational(rng.randint(1, 63), 64)

    return {
        S.theta: r(-4, 4), S.g: r(-4, 4), S.t: t if t is not None else rng.choice([1, 2, 3, 7]),
        S.m: r(-2, 2), S.v: r(1, 4), S.vmax: r(0, 4) if vmax is None else vmax,
        S.buf: r(-2, 2), S.accum: r(0, 4), S.gavg: r(-1, 1), S.u: r(0, 4),
        S.lr: unit(), S.initial_lr: unit(), S.beta1: unit(), S.beta2: unit(), S.eps: unit() / 8,
        WD: unit(), S.momentum: unit(), S.dampening: unit(), S.alpha: unit(),
        S.lr_decay: unit(),
    }


def points(seed: int, n: int = 3, fixed: dict | None = None) -> list[dict]:
    """`n` rational points; the first at t = 1 (where several rules have their own branch)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = rational_point(rng, t=1 if i == 0 else None)
        p.update(fixed or {})
        out.append(p)
    return out


def same_number(a: sp.Expr, b: sp.Expr) -> bool:
    """Exact equality of two closed-form numbers (rationals, radicals)."""
    d = sp.sympify(a - b)
    return d == 0 or sp.expand(sp.radsimp(d)) == 0 or sp.simplify(d) == 0


def at(expr: sp.Expr, point: dict) -> sp.Expr:
    """`expr` at `point` (xreplace rebuilds with evaluation on: a number, also from a tree)."""
    value = sp.sympify(expr).xreplace(point)
    assert not value.free_symbols, value
    return value


def equal_at(a: sp.Expr, b: sp.Expr, pts: list[dict]) -> bool:
    return all(same_number(at(a, p), at(b, p)) for p in pts)


def differs_at(a: sp.Expr, b: sp.Expr, pts: list[dict]) -> bool:
    return any(not same_number(at(a, p), at(b, p)) for p in pts)


def branches(expr: sp.Expr) -> list[sp.Expr]:
    """The expression with every (two-branch) Piecewise replaced by its first, then its second
    branch: the lerp of the kernel orders is one formula on each side of w = 1/2."""
    pieces = expr.atoms(sp.Piecewise)
    if not pieces:
        return [expr]
    assert all(len(p.args) == 2 for p in pieces)
    return [expr.replace(sp.Piecewise, lambda *args, i=i: args[i][0]) for i in range(2)]


ADAMW = registry.get("adamw")
THETA = ADAMW.update["theta"]


# --- scale invariance ----------------------------------------------------------------------------

def _scaled(expr: sp.Expr, state: bool = True) -> sp.Expr:
    mapping = {S.g: k * S.g, S.eps: k * S.eps}
    if state:
        mapping |= {S.m: k * S.m, S.v: k**2 * S.v}
    return expr.xreplace(mapping)


def test_scale_invariance_theta_is_exact():
    assert sp.simplify(_scaled(THETA) - THETA) == 0


def test_scale_invariance_state_scales_consistently():
    # m' -> k m', v' -> k^2 v': the next step sees a consistently scaled state again.
    assert sp.simplify(_scaled(ADAMW.update["m"]) - k * ADAMW.update["m"]) == 0
    assert sp.simplify(_scaled(ADAMW.update["v"]) - k**2 * ADAMW.update["v"]) == 0


def test_scale_invariance_from_zero_state():
    fresh = THETA.subs({S.m: 0, S.v: 0})
    assert sp.simplify(_scaled(fresh, state=False) - fresh) == 0


def test_scale_invariance_needs_eps_scaled_too():
    # Without eps -> k eps the update moves: the invariance is not vacuous.
    moved = THETA.xreplace({S.g: k * S.g, S.m: k * S.m, S.v: k**2 * S.v})
    assert differs_at(moved, THETA, points(1, fixed={k: 3}))


def test_eps_zero_limit_is_scale_free():
    unscaled = sp.limit(THETA, S.eps, 0)
    scaled = sp.limit(THETA.xreplace({S.g: k * S.g, S.m: k * S.m, S.v: k**2 * S.v}), S.eps, 0)
    assert sp.simplify(scaled - unscaled) == 0


def test_eps_zero_limit_of_first_step_is_sign_descent():
    first = THETA.subs({S.t: 1, S.m: 0, S.v: 0})
    limit = sp.limit(first, S.eps, 0)
    sign = S.g / sp.Abs(S.g)
    assert sp.simplify(limit - (S.theta * (1 - S.lr * WD) - S.lr * sign)) == 0


# --- decoupled vs coupled decay ------------------------------------------------------------------

def test_sgd_l2_equals_sgd_decoupled():
    coupled = registry.get("sgd").update["theta"]
    decoupled = registry.get("sgd_decoupled").update["theta"]
    assert sp.expand(coupled - decoupled) == 0


def test_adam_l2_differs_from_adamw_counterexample():
    # A zero gradient from zero state at t = 1: AdamW only decays; Adam+L2 feeds wd*theta through
    # the adaptive normalisation, so its "decay" is lr * wd theta / (|wd theta| + eps) ~ lr.
    point = {S.theta: 1, S.g: 0, S.m: 0, S.v: 0, S.t: 1, S.lr: sp.Rational(1, 10),
             S.beta1: sp.Rational(9, 10), S.beta2: sp.Rational(999, 1000),
             S.eps: sp.Rational(1, 10**8), WD: sp.Rational(1, 2)}
    adamw = THETA.subs(point)
    adam_l2 = registry.get("adam_l2").update["theta"].subs(point)
    assert adamw.is_Rational and adam_l2.is_Rational
    assert adamw == sp.Rational(19, 20)
    assert adam_l2 == 1 - sp.Rational(1, 10) * sp.Rational(1, 2) / (sp.Rational(1, 2)
                                                                    + sp.Rational(1, 10**8))
    assert adamw != adam_l2


def test_adam_l2_decay_is_not_uniform():
    # decouple.uniform: AdamW's decay term theta' - theta'|_{wd=0} is -lr wd theta whatever the
    # gradient history; Adam+L2's depends on the moments.
    adam_l2 = registry.get("adam_l2").update["theta"]
    decay_adamw = sp.simplify(THETA - THETA.subs(WD, 0))
    assert decay_adamw == -S.lr * WD * S.theta
    decay_l2 = adam_l2 - adam_l2.subs(WD, 0)
    pts = points(2)
    history = {S.m: 1, S.v: 2}  # the same point with another gradient history
    assert any(not same_number(at(decay_l2, p), at(decay_l2, p | history)) for p in pts)


def test_adamw_moments_do_not_see_weight_decay():
    assert WD not in ADAMW.update["m"].free_symbols
    assert WD not in ADAMW.update["v"].free_symbols
    adam_l2 = registry.get("adam_l2")
    assert WD in adam_l2.update["m"].free_symbols and WD in adam_l2.update["v"].free_symbols


@pytest.mark.parametrize("convention", [
    DEFAULT,
    Convention(decay_coupling="schedule"),
    Convention(decay_coupling="independent"),
    Convention(eps="hat"),
    Convention(amsgrad="raw_max"),
], ids=lambda c: c.label())
def test_weight_decay_derivative_does_not_involve_moments(convention):
    rule = registry.get("adamw", convention)
    derivative = sp.diff(rule.update["theta"], WD)
    assert derivative.free_symbols.isdisjoint({S.m, S.v, S.vmax, S.g})
    assert WD not in derivative.free_symbols  # linear in wd


def test_weight_decay_derivative_of_default_is_minus_lr_theta():
    assert sp.simplify(sp.diff(THETA, WD) + S.lr * S.theta) == 0


def test_weight_decay_derivative_involves_moments_when_decaying_the_updated_parameters():
    rule = registry.get("adamw", Convention(decay_target="updated"))
    assert {S.m, S.v} <= sp.diff(rule.update["theta"], WD).free_symbols


# --- step one and decay only ---------------------------------------------------------------------

def test_step_one_identity():
    first = THETA.subs({S.t: 1, S.m: 0, S.v: 0})
    expected = S.theta * (1 - S.lr * WD) - S.lr * S.g / (sp.Abs(S.g) + S.eps)
    assert sp.simplify(first - expected) == 0


def test_decay_only():
    zero = {S.g: 0, S.m: 0, S.v: 0}  # any t
    assert sp.simplify(THETA.subs(zero) - S.theta * (1 - S.lr * WD)) == 0
    assert ADAMW.update["m"].subs(zero) == 0
    assert ADAMW.update["v"].subs(zero) == 0


# --- evaluation orders ---------------------------------------------------------------------------

ORDER_CASES = [
    pytest.param(False, False, id="plain"),
    pytest.param(True, False, id="amsgrad"),
    pytest.param(False, True, id="maximize"),
    pytest.param(True, True, id="amsgrad+maximize"),
]


def _rule_and_convention(amsgrad: bool, maximized: bool):
    convention = Convention(amsgrad="raw_max") if amsgrad else DEFAULT
    return registry.get("adamw", convention, maximized=maximized), convention


def _order_points(seed: int) -> list[dict]:
    # vmax = 0 (the new v wins) and vmax = 20 (above any v' of these points: the old max wins).
    return points(seed, 2, fixed={S.vmax: 0}) + points(seed + 1, 2, fixed={S.vmax: 20})


#: torch's capturable orders, which an implementation declares (spec/orders.py: DECLARABLE).
CAPTURABLE = ("torch_capturable", "torch_capturable_foreach")


@pytest.mark.parametrize(("amsgrad", "maximized"), ORDER_CASES)
def test_every_order_equals_the_rule(amsgrad, maximized):
    rule, convention = _rule_and_convention(amsgrad, maximized)
    orders = adamw_orders(rule, convention, compute=FLOAT32, declared=CAPTURABLE)
    names = [o.name for o in orders]
    assert {"straightforward", "torch_loop", "torch_foreach", "fused", "general",
            *CAPTURABLE} == set(names)
    assert len(set(names)) == len(names)
    _assert_orders_equal_the_rule([*orders, expanded(amsgrad)] if not maximized else orders,
                                  rule)


def _assert_orders_equal_the_rule(orders, rule) -> None:
    pts = _order_points(10)
    for order in orders:
        assert set(order.tree) == set(rule.update), order.name
        for name, tree in order.tree.items():
            for branch in branches(strip(tree)):
                assert not branch.atoms(StoreParam, StoreState)
                assert equal_at(branch, rule.update[name], pts), (order.name, name)


@pytest.mark.parametrize(("amsgrad", "maximized"), ORDER_CASES)
def test_declared_keras_order_equals_the_eps_hat_rule(amsgrad, maximized):
    # Keras' order is written for eps=hat (its counter convention does not change the step).
    convention = Convention(eps="hat", counter="group",
                            amsgrad="raw_max" if amsgrad else "none")
    rule = registry.get("adamw", convention, maximized=maximized)
    orders = adamw_orders(rule, convention, FLOAT32, ("keras",))
    assert [o.name for o in orders] == ["straightforward", "general", "keras"]
    _assert_orders_equal_the_rule(orders, rule)


def test_declared_order_is_left_out_under_other_conventions():
    # Under the default eps placement Keras' order is not AdamW: the run judges it in the
    # default orders, and eps placement fails (bias.step_one).
    assert "keras" not in {o.name for o in adamw_orders(ADAMW, DEFAULT, FLOAT32, ("keras",))}
    root = Convention(eps="root")
    assert declared_orders(registry.get("adamw", root), root, ("keras",)) == ()
    pts = _order_points(12)
    assert differs_at(branches(strip(keras().tree["theta"]))[0], THETA, pts)
    with pytest.raises(ValueError, match="unknown evaluation order 'nope'"):
        declared_orders(ADAMW, DEFAULT, ("nope",))


def test_capturable_orders_are_declared_and_left_out_for_float64_compute():
    assert not set(CAPTURABLE) & {o.name for o in adamw_orders(ADAMW, compute=FLOAT32)}
    names = {o.name for o in adamw_orders(ADAMW, compute=FLOAT64, declared=CAPTURABLE)}
    assert {"straightforward", "torch_loop", "fused", "general"} <= names
    assert not set(CAPTURABLE) & names


def test_other_conventions_get_the_spec_order_and_the_general_one():
    convention = Convention(eps="hat")
    orders = adamw_orders(registry.get("adamw", convention), convention)
    assert [o.name for o in orders] == ["straightforward", "general"]


def test_lerp_branches_are_both_taken():
    # The lerp's condition is 1 - beta1 < 1/2: beta1 = 0.9 takes the first branch, 0.3 the other.
    m1 = strip(torch_loop().tree["m"])
    (piece,) = m1.atoms(sp.Piecewise)
    condition = piece.args[0][1]
    assert condition.subs(S.beta1, sp.Rational(9, 10)) == sp.true
    assert condition.subs(S.beta1, sp.Rational(3, 10)) == sp.false


def test_order_check_has_power():
    # The un-maximized orders do not match the maximized rule, and an order built from another
    # convention does not match the default: the comparison above can fail.
    maximized = registry.get("adamw", maximized=True)
    pts = _order_points(11)
    for order in (torch_loop(), fused(), torch_capturable(), torch_capturable_foreach(),
                  expanded(), general(ADAMW, "decoupled")):
        assert differs_at(branches(strip(order.tree["theta"]))[0], maximized.update["theta"], pts)
    hat = straightforward(registry.get("adamw", Convention(eps="hat")))
    assert differs_at(hat.tree["theta"], THETA, pts)


# --- conventions ---------------------------------------------------------------------------------

NON_DEFAULT = [
    Convention(**{f.name: choice})
    for f in fields(Convention) if f.name != "counter"
    for choice in CHOICES[f.name] if choice != f.default
]


@pytest.mark.parametrize("convention", NON_DEFAULT, ids=lambda c: c.label())
def test_each_convention_changes_the_step(convention):
    rule = registry.get("adamw", convention)
    pts = points(20, 3, fixed={S.vmax: 20})
    changed = [name for name in ADAMW.update
               if differs_at(rule.update[name], ADAMW.update[name], pts)]
    assert changed, f"{convention.label()} gives the default step"


@pytest.mark.parametrize("counter", ["group", "global"])
def test_counter_convention_is_not_part_of_one_step(counter):
    # The counter convention says when t advances, not what one step with a given t computes.
    rule = registry.get("adamw", Convention(counter=counter))
    assert rule.update == ADAMW.update


def test_eps_hat_is_keras_form():
    hat = registry.get("adamw", Convention(eps="hat"))
    m1, v1 = ADAMW.update["m"], ADAMW.update["v"]
    bc1, bc2 = 1 - S.beta1**S.t, 1 - S.beta2**S.t
    keras = (S.theta * (1 - S.lr * WD)
             - S.lr * sp.sqrt(bc2) / bc1 * m1 / (sp.sqrt(v1) + S.eps))
    assert equal_at(hat.update["theta"], keras, points(30, 4))


def test_eps_hat_is_eps_over_sqrt_bias_correction():
    hat = registry.get("adamw", Convention(eps="hat"))
    rescaled = THETA.xreplace({S.eps: S.eps / sp.sqrt(1 - S.beta2**S.t)})
    assert equal_at(hat.update["theta"], rescaled, points(31))


def test_eps_root_agrees_with_default_as_eps_vanishes():
    root = registry.get("adamw", Convention(eps="root"))
    assert equal_at(root.update["theta"].subs(S.eps, 0), THETA.subs(S.eps, 0), points(32))


def test_schedule_coupling_is_default_at_unit_initial_lr():
    # (lr / initial_lr) wd: the schedule multiplier eta_t = lr / initial_lr times wd.
    schedule = registry.get("adamw", Convention(decay_coupling="schedule"))
    assert sp.simplify(schedule.update["theta"].subs(S.initial_lr, 1) - THETA) == 0


def test_schedule_coupling_is_independent_before_the_schedule_moves():
    # While lr = initial_lr the multiplier is 1: the decay factor is 1 - wd, as in "independent".
    schedule = registry.get("adamw", Convention(decay_coupling="schedule"))
    independent = registry.get("adamw", Convention(decay_coupling="independent"))
    diff = schedule.update["theta"].subs(S.initial_lr, S.lr) - independent.update["theta"]
    assert sp.simplify(diff) == 0


def test_independent_coupling_is_default_with_wd_over_lr():
    independent = registry.get("adamw", Convention(decay_coupling="independent"))
    lr = sp.Symbol("lr", positive=True)
    a = independent.update["theta"].xreplace({S.lr: lr})
    b = THETA.xreplace({S.lr: lr, WD: WD / lr})
    assert sp.simplify(a - b) == 0


def test_updated_target_decays_the_adam_step_too():
    updated = registry.get("adamw", Convention(decay_target="updated"))
    assert sp.simplify(updated.update["theta"] - THETA.subs(WD, 0) * (1 - S.lr * WD)) == 0


@pytest.mark.parametrize("amsgrad", ["raw_max", "corrected_max"])
def test_amsgrad_with_small_max_is_adam(amsgrad):
    rule = registry.get("adamw", Convention(amsgrad=amsgrad))
    assert equal_at(rule.update["theta"], THETA, points(40, 3, fixed={S.vmax: 0}))


def test_amsgrad_raw_and_corrected_max_agree_on_matching_state():
    # Stored raw, vmax; stored corrected, vmax / (1 - b2^t): same step at that t.
    raw = registry.get("adamw", Convention(amsgrad="raw_max"))
    corrected = registry.get("adamw", Convention(amsgrad="corrected_max"))
    matched = corrected.update["theta"].xreplace({S.vmax: S.vmax / (1 - S.beta2**S.t)})
    assert equal_at(matched, raw.update["theta"], points(41, 3, fixed={S.vmax: 20}))


def test_debiased_moments_same_theta_on_corrected_state():
    debiased = registry.get("adamw", Convention(moments="debiased"))
    t_prev = S.t - 1
    corrected_state = {S.m: S.m / (1 - S.beta1**t_prev), S.v: S.v / (1 - S.beta2**t_prev)}
    fed = {k_: e.xreplace(corrected_state) for k_, e in debiased.update.items()}
    assert sp.simplify(fed["theta"] - THETA) == 0
    # ... and it stores the corrected new moments.
    assert sp.simplify(fed["m"] - ADAMW.update["m"] / (1 - S.beta1**S.t)) == 0
    assert sp.simplify(fed["v"] - ADAMW.update["v"] / (1 - S.beta2**S.t)) == 0


def test_debiased_moments_first_step_from_zero_state():
    debiased = registry.get("adamw", Convention(moments="debiased"))
    fresh = {S.t: 1, S.m: 0, S.v: 0}
    assert sp.simplify(debiased.update["theta"].subs(fresh) - THETA.subs(fresh)) == 0


# --- tree vs canonical ---------------------------------------------------------------------------

RULES = [(name, DEFAULT, False) for name in registry.names()]
RULES += [("adamw", c, False) for c in NON_DEFAULT]
RULES += [(name, DEFAULT, True) for name in ("sgd", "momentum", "adam", "adamw", "rmsprop")]


@pytest.mark.parametrize(("name", "convention", "maximized"), RULES,
                         ids=lambda x: x.label() if isinstance(x, Convention) else str(x))
def test_tree_equals_update(name, convention, maximized):
    rule = registry.get(name, convention, maximized=maximized)
    assert set(rule.tree) == set(rule.update)
    pts = points(50, 3, fixed={S.vmax: 20}) + points(51, 1, fixed={S.vmax: 0})
    for out, tree in rule.tree.items():
        assert equal_at(tree, rule.update[out], pts), (rule.name, out)
