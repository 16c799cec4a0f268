"""Driving an implementation: guarded calls, state replay, and the step and trajectory checks
that most properties are built from."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import Adapter, ParamState, Run, Setup, capability
from adamw_conformance.core import record
from adamw_conformance.core.judge import Mismatch, Model, compare, format_hyper
from adamw_conformance.spec.bounds import Bound, Precision, environment, max_over_orders
from adamw_conformance.spec.formats import format_of, opmath


class ImplementationError(AssertionError):
    """The implementation raised, hung or misbehaved: a failure of the test, with its cause."""


@dataclass
class Config:
    """What a conformance run judges: the target, the declared precision and conventions."""

    adapter: Adapter
    model: Model = field(default_factory=Model)
    dtype: str = "float32"
    device: str = "cpu"
    compute: str | None = None  # declared arithmetic dtype; None: PyTorch's opmath of dtype
    timeout: float = 60.0
    impl_text: str = "torch.optim.AdamW"
    #: declared hyperparameter dtype (--hyper-dtype); None: exact (Python floats, double)
    hyper: str | None = None

    def precision(self, state_dtype: str | None = None) -> Precision:
        return Precision.of(self.dtype, state=state_dtype or self.dtype,
                            compute=self.compute or opmath(Precision.of(self.dtype).param).name,
                            hyper=format_of(self.hyper) if self.hyper else None)

    def options(self, **wanted: Any) -> dict[str, Any]:
        """The subset of `wanted` options the target accepts (amsgrad, maximize, ...)."""
        accepts = getattr(self.adapter, "accepts", None)
        opts = getattr(self.adapter, "options", {}) or {}
        return {k: v for k, v in wanted.items() if (accepts(k) if accepts else k in opts)}

    def supports(self, option: str) -> bool:
        return bool(self.options(**{option: True}))


def fail(message: str) -> None:
    """Fail with the property's message (Hypothesis appends the falsifying example)."""
    __tracebackhide__ = True
    raise AssertionError(message)


def guarded(what: str, fn: Callable[..., Any], *args: Any, timeout: float = 60.0) -> Any:
    """Call into the implementation: an exception or a hang becomes a readable failure."""
    # pytest leaves these frames out of failure reports: the user reads the implementation's
    # own traceback and the message, not the suite's plumbing.
    __tracebackhide__ = True
    box: dict[str, Any] = {}

    def target() -> None:
        __tracebackhide__ = True
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - everything the implementation raises
            box["error"] = e

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise ImplementationError(f"the implementation did not return from {what} within "
                                  f"{timeout:g} s (set --impl-timeout to allow more)")
    if "error" in box:
        e = box["error"]
        if isinstance(e, ImplementationError):  # already says what the implementation did
            raise e
        raise ImplementationError(f"the implementation raised {type(e).__name__} in {what}: "
                                  f"{e}") from e
    return box.get("value")


def create(cfg: Config, setup: Setup) -> Run:
    __tracebackhide__ = True
    run = guarded("creating the optimizer", cfg.adapter.create, setup, timeout=cfg.timeout)
    if run is None or not callable(getattr(run, "step", None)) \
            or not callable(getattr(run, "params", None)):
        raise ImplementationError(f"creating the optimizer gave {_short(run)}, which has no "
                                  "step(grads) and params() (the adapter protocol's Run)")
    return CheckedRun(run, [np.shape(p) for g in setup.groups for p in g.params])


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


class CheckedRun:
    """A Run whose params() is checked against the parameters it was created with: one float
    array of the created shape per parameter. Whatever else an implementation returns (None,
    text, a missing or reshaped parameter) becomes an ImplementationError that says so, never an
    error deep inside a comparison. Everything else is the wrapped Run's own."""

    def __init__(self, run: Any, shapes: Sequence[tuple[int, ...]]) -> None:
        self._run, self._shapes = run, list(shapes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)

    def step(self, grads: Sequence[np.ndarray | None]) -> Any:
        return self._run.step(grads)

    def params(self) -> list[np.ndarray]:
        __tracebackhide__ = True
        got = self._run.params()
        want = (f"expected a list of {len(self._shapes)} float arrays, one per parameter in "
                "creation order")
        if isinstance(got, (str, bytes)) or not hasattr(got, "__len__") \
                or len(got) != len(self._shapes):
            raise ImplementationError(f"the implementation's params() returned {_short(got)}: "
                                      + want)
        out = []
        for i, (p, shape) in enumerate(zip(got, self._shapes, strict=True)):
            try:
                x = np.asarray(p, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise ImplementationError(f"the implementation's params() gave parameter {i} as "
                                          f"{_short(p)}, not numbers ({e}): {want}") from None
            if x.shape != tuple(shape):
                raise ImplementationError(f"the implementation's params() gave parameter {i} "
                                          f"with shape {x.shape}, created with shape "
                                          f"{tuple(shape)}")
            out.append(x)
        return out


def step(cfg: Config, run: Run, grads: Sequence[np.ndarray | None]) -> None:
    __tracebackhide__ = True
    guarded("step()", run.step, list(grads), timeout=cfg.timeout)


def read_states(run: Run, n: int) -> list[ParamState] | None:
    """Every parameter's state, or None if the layout is unknown for any of them."""
    if not capability(run, "read_state"):
        return None
    states = [run.read_state(i) for i in range(n)]
    return None if any(s is None for s in states) else states


def prepare(cfg: Config, setup: Setup, params: Sequence[np.ndarray],
            states: Sequence[ParamState]) -> Run | None:
    """A run positioned at (params, states), ready for the next step: state replay.

    Fresh states need nothing. Otherwise one warm-up step creates the implementation's state,
    which is then overwritten; None if the implementation's state cannot be written.
    """
    fresh = all(s.step == 0 and not any(np.any(x) for x in s.as_mapping().values())
                for s in states)
    run = create(cfg, replace(setup, groups=[replace(g, params=list(g.params))
                                             for g in setup.groups]))
    if fresh:
        return run
    if not (capability(run, "write_state") and capability(run, "write_params")):
        return None
    step(cfg, run, [np.zeros_like(p) for p in params])
    for i, (p, s) in enumerate(zip(params, states, strict=True)):
        if not run.write_state(i, s):
            return None
        run.write_params(i, p)
    return run


@dataclass
class StepOutcome:
    """What one judged step produced, for messages and further checks."""

    params: list[np.ndarray]
    states: list[ParamState] | None
    mismatches: list[tuple[int, Mismatch]]
    bounds: list[dict[str, Bound]]
    exact: list[Any]
    #: per parameter, the step's inputs (params, state, gradient, t) where it was judged, else
    #: None: what a diagnosis re-judges under another model (`float32_hyperparameters`)
    inputs: list[tuple[np.ndarray, dict[str, Any], np.ndarray, int] | None] = field(
        default_factory=list)


def judge_step(cfg: Config, run: Run, before: Sequence[np.ndarray],
               before_states: Sequence[ParamState], grads: Sequence[np.ndarray | None],
               hypers: Sequence[dict[str, float]], model: Model | None = None) -> StepOutcome:
    """Step `run` once and compare every parameter (and its state, if readable) with the spec.

    Parameters without a gradient are skipped here (groups.none_grad checks them bitwise).
    """
    step(cfg, run, grads)
    after = run.params()
    return judge_values(cfg, after, read_states(run, len(after)), before, before_states, grads,
                        hypers, model)


def failure(prop: str, cfg: Config, outcome: StepOutcome, hypers: Sequence[dict[str, float]],
            t: int, note: str = "", repro: str = "") -> str:
    """The message a user reads when a step breaks its bound."""
    lines = [f"{prop}: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}) is outside the spec's "
             f"bound at step t={t}" + (f" ({note})" if note else "")]
    for i, mm in outcome.mismatches[:4]:
        lines.append(f"  parameter {i}: {mm.describe()}")
        lines.append(f"    hyperparameters: {format_hyper(hypers[i])}")
    lines.append(f"  judged against: rule {cfg.model.rule.name}; precision "
                 f"{cfg.precision().label()}")
    lines += [f"  note: {n}" for n in rounded_to_one(cfg.dtype, hypers)]
    lines += [f"  note: {n}" for n in float32_hyperparameters(cfg, outcome, hypers)]
    if repro:
        lines.append("  reproduce:\n" + "\n".join("    " + r for r in repro.splitlines()))
    return "\n".join(lines)


def rounded_to_one(dtype: str, hypers: Sequence[dict[str, float]]) -> list[str]:
    """A diagnosis for the message, never a verdict: betas that become 1.0 in `dtype`, which an
    implementation that casts its hyperparameters to the parameter dtype (Keras, optax) uses,
    and betas whose 1 - beta that cast moves by more than 5% (bf16(0.99) = 0.98828125: 17%)."""
    import torch

    notes = []
    for k, b in sorted({(k, h[k]) for h in hypers for k in ("beta1", "beta2")
                        if k in h and h[k] != 1.0}):
        cast = torch.tensor(b, dtype=getattr(torch, dtype)).item()
        if cast == 1.0:
            notes.append(f"{k}={b!r} rounds to 1.0 in {dtype}: an implementation that casts it "
                         f"to the parameter dtype stops decaying {'v' if k == 'beta2' else 'm'} "
                         f"(it accumulates instead of averaging) and its bias correction "
                         f"1 - {k}^t is 0")
        elif b < 1.0 and abs((1 - cast) - (1 - b)) > 0.05 * (1 - b):
            notes.append(f"{k}={b!r} is {cast!r} in {dtype}: an implementation that casts it "
                         f"to the parameter dtype has 1 - {k} off by "
                         f"{abs(cast - b) / (1 - b):.0%}, and its bias correction with it")
    return notes


def float32_hyperparameters(cfg: Config, outcome: StepOutcome,
                            hypers: Sequence[dict[str, float]]) -> list[str]:
    """A diagnosis from evidence, never a verdict: where every parameter out of the bound is
    within the bound of the same step with its hyperparameters rounded to float32 (the oracle
    at those values, judged in the --hyper-dtype=float32 profile), the implementation computes
    its hyperparameters as C floats. Computed only for a failed step of known inputs, and only
    where the rounding changes a hyperparameter."""
    if cfg.hyper is not None or not outcome.mismatches or not outcome.inputs:
        return []
    declared = replace(cfg, hyper="float32")
    changed: dict[str, tuple[float, float]] = {}
    for i in sorted({i for i, _ in outcome.mismatches}):
        if i >= len(outcome.inputs) or outcome.inputs[i] is None:
            return []
        params, state, grad, t = outcome.inputs[i]
        h32 = {k: float(np.float32(v)) for k, v in hypers[i].items()}
        changed.update({k: (v, h32[k]) for k, v in hypers[i].items() if h32[k] != v})
        now = outcome.states[i] if outcome.states is not None else None
        sdtype = now.dtype if now is not None else None
        exact, bnd = cfg.model.expect(params, grad, state, h32, t, declared.precision(sdtype))
        got = {"theta": outcome.params[i], **(now.as_mapping() if now is not None else {})}
        with record.suspended():
            for name, value in got.items():
                fmt = cfg.dtype if name == "theta" else (sdtype or cfg.dtype)
                if name in bnd and compare(name, value, exact[name], bnd[name], fmt):
                    return []
    if not changed:
        return []
    shown = ", ".join(f"{k}={a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
    return [f"every parameter out of the bound is within the bound of the same step with its "
            f"hyperparameters rounded to float32 ({shown}; --hyper-dtype=float32): the "
            f"implementation computes its hyperparameters in float32, as a C float kernel "
            f"does. If it is meant to, declare --hyper-dtype=float32"]


def reproduction(cfg: Config, prop: str) -> str:
    return (f"pytest conformance --impl='{cfg.impl_text}' --dtype={cfg.dtype} "
            f"--device={cfg.device} -k {prop.split('.')[-1]} "
            "--hypothesis-seed=<seed printed above>")


def can_replay(cfg: Config) -> bool:
    """Whether the target's state can be read and written (probed once per run)."""
    cached = getattr(cfg, "_can_replay", None)
    if cached is None:
        from adamw_conformance.adapters.base import GroupSetup
        from adamw_conformance.core.strategies import typical_hyper
        setup = Setup([GroupSetup([np.ones(2)], typical_hyper(cfg.model.rule_name))],
                      cfg.dtype, cfg.device)
        # m, buf, gavg 0.5; v, accum 0.25 (gavg^2 <= v, as centered RMSProp needs)
        probe = {s.name: np.full(2, 0.25 if s.name in ("v", "accum") else 0.5)
                 for s in cfg.model.rule.state}
        try:
            run = prepare(cfg, setup, [np.ones(2)], [ParamState.of(probe, 3)])
            cached = run is not None and read_states(run, 1) is not None
        except ImplementationError:
            cached = False
        object.__setattr__(cfg, "_can_replay", cached)
    return cached


def trajectory(model: Model, prec: Precision, theta0: np.ndarray,
               grads: Sequence[np.ndarray], hyper: dict[str, float],
               state0: dict[str, np.ndarray] | None = None, t0: int = 1):
    """Exact trajectory and its propagated first-order bound on theta after len(grads) steps.

    Each step adds its own rounding bound (evaluated on the exact trajectory) to the errors of
    its inputs carried through |d output / d input|: for implementations whose state cannot be
    read, so that per-step replay is impossible.
    """
    exact = model.oracle.trajectory(theta0, grads, hyper, state0, t0)
    names = model.rule.outputs
    carried: dict[str, np.ndarray] = {n: np.zeros(np.shape(theta0)) for n in names}
    domain = np.ones(np.shape(theta0), dtype=bool)
    prev_theta = np.asarray(theta0, dtype=np.float64)
    prev_state = {n: np.asarray((state0 or {}).get(n, np.zeros(np.shape(theta0))), np.float64)
                  for n in names if n != "theta"}
    for k, g in enumerate(grads):
        env = environment(model.rule.inputs, prev_theta, g, prev_state, hyper, t0 + k,
                          model.rule.defaults)
        local = max_over_orders(model.orders(prec), env, prec)
        new: dict[str, np.ndarray] = {}
        for n in names:
            total = local[n].value.copy()
            for src, sens in local[n].sensitivity.items():
                if src in carried:
                    with np.errstate(invalid="ignore", over="ignore"):
                        total = total + np.where(carried[src] == 0, 0.0, sens * carried[src])
            new[n] = total
            domain &= local[n].in_domain
        carried = new
        f64 = exact[k].float64()
        prev_theta = f64["theta"]
        prev_state = {n: f64[n] for n in names if n != "theta"}
    return exact[-1], Bound(np.where(domain, carried["theta"], np.inf), domain)


# --- helpers for metamorphic and exact properties (decouple.*, groups.*, schedule.*) ---------

def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality of two exact float64 images (-0.0 != 0.0; a NaN equals the same NaN)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))


def bit_difference(got: np.ndarray, want: np.ndarray) -> str:
    """Where two arrays differ bitwise, for a failure message (got first)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return f"shape {got.shape} vs {want.shape}"
    diff = np.flatnonzero(got.view(np.int64).reshape(-1) != want.view(np.int64).reshape(-1))
    if not diff.size:
        return "bitwise equal"
    i = int(diff[0])
    return (f"{diff.size} of {got.size} elements differ; first at flat index {i}: "
            f"got {got.reshape(-1)[i]!r}, expected {want.reshape(-1)[i]!r}")


def judge_values(cfg: Config, after: Sequence[np.ndarray],
                 states: Sequence[ParamState | None] | None, before: Sequence[np.ndarray],
                 before_states: Sequence[ParamState | None], grads: Sequence[np.ndarray | None],
                 hypers: Sequence[dict[str, float]], model: Model | None = None) -> StepOutcome:
    """judge_step's verdict for a step already taken: `after`/`states` against the oracle step
    from `before`/`before_states`. Parameters without a gradient, or whose state before the step
    is unknown (None), are not judged; a None in `states` leaves that parameter's state unjudged.
    """
    model = model or cfg.model
    mismatches: list[tuple[int, Mismatch]] = []
    bounds: list[dict[str, Bound]] = []
    exacts: list[Any] = []
    inputs: list[Any] = []
    for i, g in enumerate(grads):
        s = before_states[i]
        if g is None or s is None:
            bounds.append({})
            exacts.append(None)
            inputs.append(None)
            continue
        inputs.append((before[i], s.as_mapping(), g, s.step + 1))
        now = states[i] if states is not None else None
        sdtype = now.dtype if now is not None else None
        exact, bnd = model.expect(before[i], g, s.as_mapping(), hypers[i], s.step + 1,
                                  cfg.precision(sdtype))
        bounds.append(bnd)
        exacts.append(exact)
        got = {"theta": after[i], **(now.as_mapping() if now is not None else {})}
        for name, value in got.items():
            if name not in bnd:
                continue
            fmt = cfg.dtype if name == "theta" else (sdtype or cfg.dtype)
            bad = compare(name, value, exact[name], bnd[name], fmt)
            if bad:
                mismatches.append((i, bad))
    return StepOutcome(list(after), None if states is None else list(states),  # type: ignore[arg-type]
                       mismatches, bounds, exacts, inputs)


def read_each_state(run: Run, n: int) -> list[ParamState | None]:
    """Each parameter's state where the target exposes it (None for a parameter without state
    yet, or everywhere when the layout is unknown): unlike read_states, one missing state does
    not hide the others."""
    if not capability(run, "read_state"):
        return [None] * n
    return [run.read_state(i) for i in range(n)]


def with_schedule_base(model: Model, hyper: dict[str, float],
                       initial_lr: float) -> dict[str, float]:
    """`hyper` plus the lr the group was created with, where the declared convention's decay
    needs it (decay_coupling=schedule: lr / initial_lr * wd)."""
    names = set(model.rule.hyperparameter_names)
    return {**hyper, "initial_lr": initial_lr} if "initial_lr" in names else dict(hyper)
