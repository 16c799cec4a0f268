"""How a target stores the spec's state (adapters/base.py: StateLayout), found from behaviour,
and the decoding between the two: the suite judges what a state means, not how it is kept.

Detection runs once per target (dtype, device and rule), on a probe: one parameter, two steps
from a fresh state with known gradients.
- The counter is the scalar that advanced by exactly 1 at each step, wherever the target keeps
  it (`run.scalars(i)`: its state, its group's dict, the optimizer's); several such are all
  counters, and replay writes each. Another scalar that changed between the two steps holds
  something replay cannot write (a running product of betas, say): replay is refused.
- The moments are read back after each step and judged against the oracle's raw moments and
  its bias-corrected ones (spec/rules/adam.py: DEBIASING), within the bound, the second step
  from the target's own first state; the form both steps match is the layout. Where neither
  does (a target whose moments are wrong) they are read as stored, and the properties judge
  them.
- A Kahan compensation beside the parameter, and a stochastic rounding into it, are found by
  the probes of core/technique_probe.py (docs/precision-techniques.md).

Reading decodes the stored state to the spec's (m = mh (1 - b1^t), at the target's own
counter); replay encodes the spec's state into the target's form (mh = m / (1 - b1^t)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import mpmath
import numpy as np
import sympy as sp
from adamw_conformance.adapters.base import (
    COUNTER_OF_SCOPE,
    REPORTED,
    GroupSetup,
    ParamState,
    Place,
    Setup,
    StateLayout,
    capability,
    where,
)
from adamw_conformance.core import (
    calls,
    compile_reuse,
    context,
    quant_probe,
    record,
    representation,
    technique_probe,
)
from adamw_conformance.core.config import Config
from adamw_conformance.spec.rules.adam import DEBIASING
from adamw_conformance.spec.symbols import beta1, beta2, t

# The probe: values exact in every dtype; at t=1 raw m = 0.1 g and the corrected m = g, raw
# v = 0.001 g^2 and the corrected v = g^2 (typical betas), far apart at any precision.
_THETA = (1.0, -0.5, 0.25)
_GRADS = ((0.5, -0.25, 1.0), (-0.125, 0.75, 0.5))

#: The order counters are reported in: the parameter's own first (what a read reports).
_SCOPES = ("parameter", "group", "optimizer", "attribute")

_FACTORS = {s.name: sp.lambdify((beta1, beta2, t), f, "mpmath") for s, f in DEBIASING.items()}
#: The state that decoding touches (m, v); the rest is stored as the spec has it.
DECODED = tuple(_FACTORS)

#: Detected layouts by target: (adapter, dtype, device, rule) -> layout. The adapter is kept
#: in the value, so that a key's id() is never reused by another object.
_DETECTED: dict[tuple[int, str, str, str], tuple[Any, StateLayout]] = {}


def of(cfg: Config) -> StateLayout:
    """The target's layout: declared by its adapter, else detected (once per target)."""
    key = (id(cfg.adapter), cfg.dtype, cfg.device, cfg.model.rule_name)
    known = _DETECTED.get(key)
    if known is None or known[0] is not cfg.adapter:
        known = (cfg.adapter, detect(cfg))
        _DETECTED[key] = known
        # the precision profile reads it (core/config.py): a stochastic store's budget
        representation.note_rounding(cfg, known[1].rounding)
    # the run's strategies then draw tensors the target quantizes (a look outside a run
    # leaves the default session's draws alone)
    if known[1].quantized and context.in_run():
        context.current().quantized = known[1].quantized
    # and, for a target that compiles its step per shape and per value, their shapes and those
    # values from small sets (read here because the plugin asks for the layout before the
    # first test draws)
    now = context.current()
    if context.in_run() and not now.shape_set and not now.value_sets:
        found = compile_reuse.recompiles(cfg)
        now.shape_set = found.per_shape
        if found.per_value:
            from adamw_conformance.core import session
            from adamw_conformance.core.strategies import value_sets

            run = session.current()
            now.value_sets = value_sets(found.per_value, run.seed if run else None)
    return known[1]


def detect(cfg: Config) -> StateLayout:
    """The layout `cfg`'s target declares, or the one its behaviour on the probe shows."""
    declared = cfg.caps.layout
    if declared is not None:
        return replace(declared, source="declared")
    try:
        lay = _probe(cfg)
        return replace(lay, quantized=quant_probe.find(cfg)) if lay.readable else lay
    except calls.ImplementationError as e:
        return StateLayout(source="undetermined", note="the probe failed: "
                           + (str(e).splitlines() or [type(e).__name__])[0])


# --- decoding -----------------------------------------------------------------------------------

def factors(hyper: Mapping[str, float], step: int) -> dict[str, float]:
    """The bias correction of each moment after `step` steps (DEBIASING), in float64: the
    corrected state holds the raw one divided by it."""
    args = (mpmath.mpf(hyper["beta1"]), mpmath.mpf(hyper["beta2"]), step)
    return {name: float(f(*args)) for name, f in _FACTORS.items()}


def _applies(state: ParamState, hyper: Mapping[str, float]) -> bool:
    return "beta1" in hyper and "beta2" in hyper and any(
        getattr(state, name, None) is not None for name in _FACTORS)


def to_spec(state: ParamState, stored: str, spec: str, hyper: Mapping[str, float]
            ) -> ParamState:
    """A state read in the `stored` form of the moments, in the spec's `spec` form."""
    if stored == spec or not _applies(state, hyper):
        return state
    f = factors(hyper, state.step)
    scale = {name: (f[name] if stored == "debiased" else 1.0 / f[name]) if f[name] else 0.0
             for name in f}
    return replace(state, **{name: getattr(state, name) * scale[name] for name in f
                             if getattr(state, name) is not None})


def to_stored(state: ParamState, stored: str, spec: str, hyper: Mapping[str, float]
              ) -> ParamState:
    """The spec's state (`spec` form) as a target storing the `stored` form holds it."""
    if stored == spec or not _applies(state, hyper):
        return state
    f = factors(hyper, state.step)
    # at t = 0 the correction is 0 and so is every moment: nothing to scale
    scale = {name: (1.0 / f[name] if stored == "debiased" else f[name]) if f[name] else 0.0
             for name in f}
    return replace(state, **{name: getattr(state, name) * scale[name] for name in f
                             if getattr(state, name) is not None})


# --- runs ---------------------------------------------------------------------------------------

def bind(run: Any) -> tuple[StateLayout, str, Sequence[Mapping[str, float]]] | None:
    """For a run the suite created (calls.create): its target's layout, the form of the
    moments in the spec it is judged against, and each parameter's hyperparameters; the run is
    told the layout once (`use_layout`). None for a run created outside the suite."""
    run = getattr(run, "suite_run", None)
    if not isinstance(run, calls.CheckedRun) or run.judged_by is None \
            or run.created_with is None:
        return None
    cfg, setup = run.judged_by, run.created_with
    lay = of(cfg)
    if not run.layout_told:
        run.layout_told = True
        if lay.source in ("declared", "detected") and capability(run, "use_layout"):
            calls.guarded("use_layout()", run.use_layout,
                          for_convention(lay, cfg.model.convention.counter), timeout=cfg.timeout)
    hypers = [g.hyper for g in setup.groups for _ in g.params]
    return lay, cfg.model.convention.moments, hypers


def for_convention(lay: StateLayout, counter: str) -> StateLayout:
    """`lay` with the counter the declared counter convention counts read first: a target
    that keeps a group's count and copies it into each parameter's state when the parameter
    steps (so that a skipped parameter's copy is stale) is read at the group's count under
    counter=group, at its own under the default."""
    first = [p for p in lay.counters if COUNTER_OF_SCOPE.get(p[0]) == counter]
    return replace(lay, counters=(*first, *(p for p in lay.counters if p not in first)))


def shared_counter(cfg: Config) -> str | None:
    """Where the run judges the per-parameter counter and the layout found the target's counter
    kept for a whole group or the whole optimizer: that finding, for the message of a failure
    where a parameter steps after missing some (its t is then the shared count, not its own).
    A finding from behaviour, not a guess at the cause; None otherwise."""
    if cfg.model.convention.counter != "parameter":
        return None
    shared = [p for p in of(cfg).counters if COUNTER_OF_SCOPE.get(p[0]) in ("group", "global")]
    if not shared:
        return None
    kind = COUNTER_OF_SCOPE[shared[0][0]]
    scope = "one counter per group" if kind == "group" else "one counter for the optimizer"
    return (f"the layout probe found the target's step counter kept as {scope} "
            f"({where(shared[0])}): a parameter that missed steps is then corrected at that "
            f"count, not at its own, which the per-parameter convention judged here does not "
            f"allow (counter={kind} is a named convention: --conventions=counter={kind})")


def decoded(run: Any, i: int, state: ParamState | None) -> ParamState | None:
    """Parameter i's state read from `run`, in the spec's terms."""
    bound = bind(run)
    if state is None or bound is None:
        return state
    lay, spec, hypers = bound
    return to_spec(state, lay.moments, spec, hypers[i])


def encoded(run: Any, i: int, state: ParamState) -> ParamState:
    """The spec's state of parameter i as `run`'s target stores it."""
    bound = bind(run)
    if bound is None:
        return state
    lay, spec, hypers = bound
    return to_stored(state, lay.moments, spec, hypers[i])


def translates(run: Any) -> bool:
    """Whether `run`'s stored moments differ in form from the spec's (reading decodes them)."""
    bound = bind(run)
    return bound is not None and bound[0].moments != bound[1]


# --- the probe ----------------------------------------------------------------------------------

def _probe(cfg: Config) -> StateLayout:
    from adamw_conformance.core.strategies import typical_hyper

    hyper = typical_hyper(cfg.model.rule_name)
    run, snaps, reads, comp = _observe(cfg, hyper, None)
    if comp is not None:
        # the reads above met the compensation as a key they do not know: read again, told
        run, snaps, reads, _ = _observe(cfg, hyper, comp)
    seen = capability(run, "scalars")
    counters = _counters(snaps)
    changing = [p for p in snaps[2] if p not in counters and p[0] != "attribute"
                and p in snaps[1] and snaps[1][p] != snaps[2][p]]
    refused = None
    if changing:
        refused = (f"{where(changing[0])} changes every step and is not the step counter: "
                   f"replay cannot write what it holds")
    moments, note = _moments(cfg, hyper, reads)
    names: tuple[tuple[str, str], ...] = ()
    if capability(run, "state_keys"):
        keys = calls.guarded("state_keys()", run.state_keys, 0, timeout=cfg.timeout) or {}
        names = tuple(sorted(keys.items()))
    rounding = technique_probe.rounding(cfg)
    return StateLayout(moments, tuple(counters) if seen else (REPORTED,), names,
                       "detected", refused, note, readable=reads[-1] is not None,
                       compensation=comp, rounding=rounding)


def _observe(cfg: Config, hyper: Mapping[str, float], comp: str | None
             ) -> tuple[Any, list[dict[Place, float]], list[ParamState | None], str | None]:
    """The probe's two steps on a fresh run (told the compensation `comp`, if any): the
    scalars before and after each, the state read after each, and the key of a Kahan
    compensation the target's unnamed state shows (core/technique_probe.py)."""
    setup = Setup([GroupSetup([np.array(_THETA)], hyper)], cfg.dtype, cfg.device)
    run = calls.guarded("creating the optimizer", cfg.adapter.create, setup,
                        timeout=cfg.timeout)
    if comp is not None and capability(run, "use_layout"):
        run.use_layout(StateLayout(compensation=comp))
    seen = capability(run, "scalars")
    snaps = [_scalars(cfg, run) if seen else {}]
    reads: list[ParamState | None] = []
    candidates: list[dict[str, bool]] = []
    for g in _GRADS:
        calls.step(cfg, run, [np.array(g)])
        snaps.append(_scalars(cfg, run) if seen else {})
        reads.append(calls.guarded("read_state()", run.read_state, 0, timeout=cfg.timeout)
                     if capability(run, "read_state") else None)
        candidates.append(technique_probe.compensation_candidates(cfg, run))
    return run, snaps, reads, technique_probe.compensation(candidates)


def _scalars(cfg: Config, run: Any) -> dict[Place, float]:
    return dict(calls.guarded("scalars()", run.scalars, 0, timeout=cfg.timeout) or {})


def _counters(snaps: Sequence[Mapping[Place, float]]) -> list[Place]:
    """The scalars that advanced by exactly 1 at each step (absent before: 0), the parameter's
    own first."""
    # (finite: inf + 1 == inf, and torchao keeps block_size = inf as an attribute)
    found = [p for p, x in snaps[2].items()
             if math.isfinite(x) and p in snaps[1] and snaps[1][p] == snaps[0].get(p, 0.0) + 1
             and x == snaps[1][p] + 1]
    return sorted(found, key=lambda p: _SCOPES.index(p[0]) if p[0] in _SCOPES else len(_SCOPES))


def _moments(cfg: Config, hyper: Mapping[str, float],
             reads: Sequence[ParamState | None]) -> tuple[str, str]:
    """The form of the stored moments both probe steps match, and a note where neither does."""
    if any(s is None for s in reads):
        return "raw", ""
    names = {s.name for s in cfg.model.rule.state}
    if not set(_FACTORS) <= names or not _applies(reads[0], hyper):  # type: ignore[arg-type]
        return "raw", ""
    fits = [form for form in ("raw", "debiased") if _matches(cfg, hyper, reads, form)]
    if len(fits) == 1:
        return fits[0], ""
    return "raw", ("the stored moments match neither raw nor bias-corrected moments on the "
                   "probe: read as stored")


def _matches(cfg: Config, hyper: Mapping[str, float], reads: Sequence[ParamState | None],
             form: str) -> bool:
    from adamw_conformance.core.judge import Model, compare

    # m and v depend on no other convention (one parameter: every counter counts alike); the
    # probe passes no option, so only a maximize the target fixes is on
    model = Model(cfg.model.rule_name, maximize=cfg.caps.fixed.get("maximize") is True)
    theta = np.array(_THETA)
    before = {name: np.zeros(len(_THETA)) for name in _FACTORS}
    with record.suspended():
        for k, (g, read) in enumerate(zip(_GRADS, reads, strict=True), start=1):
            assert read is not None
            got = to_spec(replace(read, step=k), form, "raw", hyper)
            exact, bound = model.expect(theta, np.array(g), before, hyper, k,
                                        cfg.precision(read.dtype))
            fmt = read.dtype or cfg.dtype
            for name in _FACTORS:
                value = getattr(got, name)
                if value is None or compare(name, value, exact[name], bound[name], fmt):
                    return False
            before = {name: getattr(got, name) for name in _FACTORS}
    return True


# A run the suite created is told its layout before its parameters are read (a Kahan pair is
# read as its sum): calls cannot import this module, which imports it.
calls.before_params = bind
