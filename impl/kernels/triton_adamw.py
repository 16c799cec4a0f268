"""AdamW as a Triton kernel, with torch._fused_adamw_'s calling convention.

    adamw(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *,
          lr, beta1, beta2, weight_decay, eps, amsgrad, maximize,
          grad_scale=None, found_inf=None) -> None

Gate it with `pytest conformance --impl=impl.kernels.triton_adamw:adamw`.

- Parameters (and their gradients) are float32, bfloat16 or float16; the state (exp_avg,
  exp_avg_sq, max_exp_avg_sq) is float32 whatever the parameter dtype (`adamw.state_dtype` says so
  to the suite). All arithmetic is float32; each output is rounded to its dtype once, at the end.
- Lists of tensors are updated in place, one launch per tensor; `state_steps` are float32 0-dim
  tensors that the caller has already advanced for this step.
- Hyperparameter-only arithmetic (1 - lr wd, lr / (1 - beta1^t), sqrt(1 - beta2^t), ...) runs in
  double on the host, and each such scalar is rounded to float32 once, into a small tensor the
  kernel loads. That is the evaluation order `spec.orders.fused` models (double scalars cast to
  the compute type, float32 intermediates, one store per output), so the suite's bound covers it.
- `grad_scale`: gradients are divided by it and the unscaled gradients are written back, as
  torch's fused kernels do. `found_inf`: if nonzero, nothing is written at all; undoing the step
  counter is the caller's business (as in torch.optim). Both are read on the device; the step
  counts are read on the host (the double scalars need them), one sync per tensor on a GPU.

On a GPU the kernel is compiled by Triton. On the CPU (tensors on the CPU, or no GPU at all) it
runs in Triton's interpreter; see the comment above `_interpreted` for how and why, and
SOFT_BF16 in the kernel for two bfloat16 conversion bugs of the interpreter it works around.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
STATE_DTYPE = torch.float32

# Per-tensor scalars, computed in double on the host and rounded to float32 once (column order).
KEEP, LERP_W, LERP_1MW, BETA2, ONE_MINUS_BETA2, NEG_STEP_SIZE, BC2_SQRT, EPS = range(8)
N_SCALARS = 8


def _adamw_body(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_exp_avg_sq_ptr,
                scalars_ptr, grad_scale_ptr, found_inf_ptr, n_elements,
                AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr, LERP_FROM_END: tl.constexpr,
                HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr,
                SOFT_BF16: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = n_elements
    if HAS_FOUND_INF:
        # An overflow found by the loss scaler: no element is live, nothing is written.
        live = tl.where(tl.load(found_inf_ptr).to(tl.float32) != 0.0, 0, n_elements)
    mask = offsets < live

    keep = tl.load(scalars_ptr + 0)
    lerp_w = tl.load(scalars_ptr + 1)
    lerp_1mw = tl.load(scalars_ptr + 2)
    beta2 = tl.load(scalars_ptr + 3)
    one_minus_beta2 = tl.load(scalars_ptr + 4)
    neg_step_size = tl.load(scalars_ptr + 5)
    bc2_sqrt = tl.load(scalars_ptr + 6)
    eps = tl.load(scalars_ptr + 7)

    # SOFT_BF16 (bfloat16 parameters and gradients, in the interpreter): convert by hand, on the
    # bit patterns, because the interpreter's own conversions are wrong (triton 3.9): bfloat16 ->
    # float32 mangles subnormals, float32 -> bfloat16 truncates. Widening is a 16-bit shift;
    # narrowing adds 0x7FFF plus the lowest kept bit and keeps the high half, which is round to
    # nearest even on the bit pattern (overflow goes to inf, as it should). A NaN keeps its own
    # bits (a quiet NaN's payload lies in the high half). On a GPU the native conversions are used.
    if SOFT_BF16:
        bits = tl.load(param_ptr + offsets, mask=mask).to(tl.uint16, bitcast=True)
        theta = (bits.to(tl.uint32) << 16).to(tl.float32, bitcast=True)
        bits = tl.load(grad_ptr + offsets, mask=mask).to(tl.uint16, bitcast=True)
        g = (bits.to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        theta = tl.load(param_ptr + offsets, mask=mask).to(tl.float32)
        g = tl.load(grad_ptr + offsets, mask=mask).to(tl.float32)
    if HAS_GRAD_SCALE:
        g = tl.div_rn(g, tl.load(grad_scale_ptr).to(tl.float32))
        if SOFT_BF16:
            bits = g.to(tl.uint32, bitcast=True)
            bits = tl.where(g != g, bits >> 16, (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16)
            tl.store(grad_ptr + offsets, bits.to(tl.uint16).to(tl.bfloat16, bitcast=True),
                     mask=mask)
        else:
            tl.store(grad_ptr + offsets, g.to(grad_ptr.dtype.element_ty), mask=mask)
    if MAXIMIZE:
        g = -g
    m = tl.load(exp_avg_ptr + offsets, mask=mask)
    v = tl.load(exp_avg_sq_ptr + offsets, mask=mask)

    decayed = theta * keep
    # ATen's lerp, the branch chosen on the host from the exact weight 1 - beta1.
    if LERP_FROM_END:
        m = g - (g - m) * lerp_1mw
    else:
        m = m + lerp_w * (g - m)
    v = v * beta2 + one_minus_beta2 * g * g
    source = v
    if AMSGRAD:
        vmax = tl.maximum(tl.load(max_exp_avg_sq_ptr + offsets, mask=mask), v,
                          propagate_nan=tl.PropagateNan.ALL)
        tl.store(max_exp_avg_sq_ptr + offsets, vmax, mask=mask)
        source = vmax
    # Correctly rounded sqrt and division: Triton's defaults (tl.sqrt, `/`) are approximate on
    # NVIDIA GPUs (sqrt.approx, div.full: up to 2 ulp), outside the budget of the bound.
    denom = tl.div_rn(tl.sqrt_rn(source), bc2_sqrt) + eps
    new = decayed + neg_step_size * tl.div_rn(m, denom)

    if SOFT_BF16:  # round to nearest even by hand, as for g above
        bits = new.to(tl.uint32, bitcast=True)
        bits = tl.where(new != new, bits >> 16, (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16)
        tl.store(param_ptr + offsets, bits.to(tl.uint16).to(tl.bfloat16, bitcast=True),
                 mask=mask)
    else:
        tl.store(param_ptr + offsets, new.to(param_ptr.dtype.element_ty), mask=mask)
    tl.store(exp_avg_ptr + offsets, m, mask=mask)
    tl.store(exp_avg_sq_ptr + offsets, v, mask=mask)


@contextmanager
def _interpret(on: bool) -> Iterator[None]:
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old


# Triton reads TRITON_INTERPRET when `triton.jit` decorates a function (triton/runtime/jit.py:
# `jit()` asks `knobs.runtime.interpret`, which reads the environment on each access), not at
# `import triton` nor at launch: the decorated object is either a compiled JITFunction or an
# InterpretedFunction for good. Triton cannot compile for the CPU, so CPU tensors always need the
# interpreter, even on a machine that has a GPU (`--device=cpu` there). Hence two decorations of
# one body, with the variable set for exactly the duration of each, instead of changing it for the
# whole process: CPU tensors take `_interpreted`, CUDA tensors `_compiled` (which honours a
# TRITON_INTERPRET=1 the user set, for debugging on the GPU).
with _interpret(True):
    _interpreted = triton.jit(_adamw_body)
_compiled = triton.jit(_adamw_body)


def _is_interpreter(kernel: object) -> bool:
    return not isinstance(kernel, triton.runtime.JITFunction)


def _check(params: Sequence[Tensor], grads: Sequence[Tensor], exp_avgs: Sequence[Tensor],
           exp_avg_sqs: Sequence[Tensor], max_exp_avg_sqs: Sequence[Tensor],
           state_steps: Sequence[Tensor], amsgrad: bool) -> None:
    n = len(params)
    lists = {"grads": grads, "exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs,
             "state_steps": state_steps}
    if amsgrad:
        lists["max_exp_avg_sqs"] = max_exp_avg_sqs
    for name, tensors in lists.items():
        if len(tensors) != n:
            raise ValueError(f"triton adamw: {len(tensors)} {name} for {n} params; "
                             "one per parameter is needed")
    for i, p in enumerate(params):
        if p.dtype not in PARAM_DTYPES:
            raise ValueError(f"triton adamw: params[{i}] is {p.dtype}; this kernel takes "
                             "float32, bfloat16 or float16 parameters")
        if grads[i].dtype != p.dtype or grads[i].shape != p.shape:
            raise ValueError(f"triton adamw: grads[{i}] is {grads[i].dtype} {tuple(grads[i].shape)}"
                             f", params[{i}] {p.dtype} {tuple(p.shape)}; they must match")
        states = [("exp_avgs", exp_avgs[i]), ("exp_avg_sqs", exp_avg_sqs[i])]
        if amsgrad:
            states.append(("max_exp_avg_sqs", max_exp_avg_sqs[i]))
        for name, s in states:
            if s.dtype != STATE_DTYPE or s.shape != p.shape:
                raise ValueError(f"triton adamw: {name}[{i}] is {s.dtype} {tuple(s.shape)}; the "
                                 f"state must be float32 with the parameter's shape "
                                 f"{tuple(p.shape)}")
        devices = {t.device for t in (p, grads[i], *(s for _, s in states))}
        if len(devices) != 1:
            raise ValueError(f"triton adamw: the tensors of parameter {i} are on several devices "
                             f"({', '.join(sorted(map(str, devices)))})")


def _scalars(state_steps: Sequence[Tensor], *, lr: float, beta1: float, beta2: float,
             weight_decay: float, eps: float) -> np.ndarray:
    """The per-tensor scalars (columns KEEP..EPS) in double, one row per tensor."""
    # .item() per tensor: the step counts are needed on the host, in double (a sync on a GPU,
    # as for any kernel in this order).
    steps = np.array([float(s.item()) for s in state_steps], dtype=np.float64)
    out = np.empty((len(steps), N_SCALARS), dtype=np.float64)
    with np.errstate(all="ignore"):  # beta = 1 or huge lr give inf/NaN, as torch's would
        lerp_w = 1.0 - beta1
        out[:, KEEP] = 1.0 - lr * weight_decay
        out[:, LERP_W] = lerp_w
        # 1 - w from the float32 w, as ATen's lerp forms it: exact (w in [1/2, 1] on that branch).
        out[:, LERP_1MW] = 1.0 - np.float64(np.float32(lerp_w))
        out[:, BETA2] = beta2
        out[:, ONE_MINUS_BETA2] = 1.0 - beta2
        out[:, NEG_STEP_SIZE] = -(lr / (1.0 - np.power(beta1, steps)))
        out[:, BC2_SQRT] = np.sqrt(1.0 - np.power(beta2, steps))
        out[:, EPS] = eps
    return out


def adamw(params: Sequence[Tensor], grads: Sequence[Tensor], exp_avgs: Sequence[Tensor],
          exp_avg_sqs: Sequence[Tensor], max_exp_avg_sqs: Sequence[Tensor],
          state_steps: Sequence[Tensor], *, lr: float, beta1: float, beta2: float,
          weight_decay: float, eps: float, amsgrad: bool, maximize: bool,
          grad_scale: Tensor | None = None, found_inf: Tensor | None = None) -> None:
    """One AdamW step on each tensor, in place (see the module docstring)."""
    _check(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, amsgrad)
    if not params:
        return
    with np.errstate(over="ignore"):
        table32 = _scalars(state_steps, lr=float(lr), beta1=float(beta1), beta2=float(beta2),
                           weight_decay=float(weight_decay), eps=float(eps)).astype(np.float32)
    by_device: dict[torch.device, Tensor] = {}
    with torch.no_grad():
        for i, p in enumerate(params):
            n = p.numel()
            if n == 0:
                continue
            if p.device not in by_device:
                by_device[p.device] = torch.from_numpy(table32).to(p.device)
            kernel = _compiled if p.device.type == "cuda" else _interpreted
            interpreted = _is_interpreter(kernel)
            # The interpreter runs each program as numpy on whole blocks: fewer, larger blocks
            # are much faster there. On the GPU a 1024-wide block is the usual choice.
            block = min(triton.next_power_of_2(n), 65536 if interpreted else 1024)
            tensors = [p, grads[i], exp_avgs[i], exp_avg_sqs[i]]
            if amsgrad:
                tensors.append(max_exp_avg_sqs[i])
            # The interpreter computes with numpy, which warns about inf/NaN arithmetic that is
            # the kernel's defined behaviour (a NaN gradient gives a NaN parameter).
            with _contiguous(tensors) as work, np.errstate(all="ignore"):
                vmax = work[4] if amsgrad else work[3]  # unused without amsgrad
                kernel[(triton.cdiv(n, block),)](
                    work[0], work[1], work[2], work[3], vmax, by_device[p.device][i],
                    _on(grad_scale, p.device), _on(found_inf, p.device), n,
                    AMSGRAD=bool(amsgrad), MAXIMIZE=bool(maximize),
                    LERP_FROM_END=not (1.0 - float(beta1) < 0.5),
                    HAS_GRAD_SCALE=grad_scale is not None, HAS_FOUND_INF=found_inf is not None,
                    SOFT_BF16=interpreted and p.dtype == torch.bfloat16,
                    BLOCK=block)


def _on(t: Tensor | None, device: torch.device) -> Tensor:
    """A 0-dim flag tensor on the kernel's device; a dummy (never read) when absent."""
    if t is None:
        return torch.zeros((), dtype=torch.float32, device=device)
    return t.to(device).reshape(())


@contextmanager
def _contiguous(tensors: list[Tensor]) -> Iterator[list[Tensor]]:
    """The kernel indexes flat memory: work on contiguous copies of strided tensors and write
    them back."""
    work = [t if t.is_contiguous() else t.contiguous() for t in tensors]
    yield work
    for t, w in zip(tensors, work, strict=True):
        if w is not t:
            t.copy_(w)


#: The kernel keeps its state in float32 whatever the parameter dtype; the suite's kernel adapter
#: reads this to allocate the state (a fixed `state_dtype=` keyword in --impl still wins).
adamw.state_dtype = "float32"  # type: ignore[attr-defined]

__all__ = ["adamw"]
