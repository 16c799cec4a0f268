"""A reference functional AdamW kernel in plain torch, written the way a fused kernel is.

    adamw(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *,
          lr, beta1, beta2, weight_decay, eps, amsgrad, maximize,
          grad_scale=None, found_inf=None) -> None

The signature and calling convention are torch's `torch._fused_adamw_`:

- lists of tensors, updated in place; `max_exp_avg_sqs` is used only with `amsgrad`;
- `state_steps` are float32 0-dim tensors that the caller has already advanced for this step;
- hyperparameters are Python floats, and scalar-only arithmetic (bias corrections, step size) runs
  in double, as in torch's host code;
- tensor arithmetic runs in the "opmath" type (float32 for bfloat16/float16 tensors, the tensor's
  own dtype otherwise) and each result is stored back to its tensor's dtype once, at the end;
- `grad_scale` (0-dim tensor): gradients are divided by it first, and the unscaled gradients are
  written back to `grads`, as torch's fused kernels do; `found_inf` (0-dim tensor): if nonzero the
  step is skipped entirely (parameters, moments and gradients untouched). Undoing the step counter
  is the caller's business, as it is for torch.optim.

One step, per tensor (m = exp_avg, v = exp_avg_sq, t = state step):

    theta <- theta (1 - lr wd)
    m <- lerp(m, g, 1 - beta1)                 v <- beta2 v + (1 - beta2) g^2
    [amsgrad: vmax <- max(vmax, v); v used below is vmax]
    denom = sqrt(v) / sqrt(1 - beta2^t) + eps
    theta <- theta - (lr / (1 - beta1^t)) m / denom

The math is split into small methods of `AdamWMath` so that a variant (see `impl.mutants`) is the
one method it changes; `make_kernel` turns any `AdamWMath` into a kernel with the signature above.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Kernel = Callable[..., None]


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype arithmetic on `dtype` tensors runs in (PyTorch's opmath_type)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class AdamWMath:
    """The per-tensor arithmetic of one AdamW step. Inputs are already in the opmath dtype."""

    def bias_corrections(self, beta1: float, beta2: float, step: float) -> tuple[float, float]:
        """1 - beta1^t and 1 - beta2^t, in double."""
        return 1 - beta1**step, 1 - beta2**step

    def decay(self, param: Tensor, lr: float, weight_decay: float) -> Tensor:
        return param * (1 - lr * weight_decay)

    def first_moment(self, exp_avg: Tensor, grad: Tensor, beta1: float) -> Tensor:
        return torch.lerp(exp_avg, grad, 1 - beta1)

    def second_moment(self, exp_avg_sq: Tensor, grad: Tensor, beta2: float) -> Tensor:
        return exp_avg_sq * beta2 + (1 - beta2) * grad * grad

    def denominator(self, exp_avg_sq: Tensor, bias_correction2: float, eps: float) -> Tensor:
        return exp_avg_sq.sqrt() / math.sqrt(bias_correction2) + eps

    def adam_step(self, exp_avg: Tensor, denom: Tensor, lr: float,
                  bias_correction1: float) -> Tensor:
        """The Adam part of the update, lr * mh / (sqrt(vh) + eps)."""
        step_size = lr / bias_correction1
        return step_size * exp_avg / denom

    def apply(self, param: Tensor, update: Tensor, lr: float, weight_decay: float) -> Tensor:
        """The new parameter: decay the previous parameter, then take the Adam step."""
        return self.decay(param, lr, weight_decay) - update

    def step(self, param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
             max_exp_avg_sq: Tensor | None, step: float, *, lr: float, beta1: float,
             beta2: float, weight_decay: float, eps: float
             ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """New (param, exp_avg, exp_avg_sq, max_exp_avg_sq), all in the opmath dtype."""
        bias_correction1, bias_correction2 = self.bias_corrections(beta1, beta2, step)
        exp_avg = self.first_moment(exp_avg, grad, beta1)
        exp_avg_sq = self.second_moment(exp_avg_sq, grad, beta2)
        source = exp_avg_sq
        if max_exp_avg_sq is not None:
            max_exp_avg_sq = torch.maximum(max_exp_avg_sq, exp_avg_sq)
            source = max_exp_avg_sq
        denom = self.denominator(source, bias_correction2, eps)
        update = self.adam_step(exp_avg, denom, lr, bias_correction1)
        return self.apply(param, update, lr, weight_decay), exp_avg, exp_avg_sq, max_exp_avg_sq


def _run(math_: AdamWMath, params: Sequence[Tensor], grads: Sequence[Tensor],
         exp_avgs: Sequence[Tensor], exp_avg_sqs: Sequence[Tensor],
         max_exp_avg_sqs: Sequence[Tensor], state_steps: Sequence[Tensor], *, lr: float,
         beta1: float, beta2: float, weight_decay: float, eps: float, amsgrad: bool,
         maximize: bool, grad_scale: Tensor | None = None,
         found_inf: Tensor | None = None) -> None:
    if found_inf is not None and bool(found_inf.item() != 0):
        return
    if amsgrad and len(max_exp_avg_sqs) != len(params):
        raise ValueError("amsgrad=True needs one max_exp_avg_sqs tensor per parameter")
    with torch.no_grad():
        for i, param in enumerate(params):
            dtype = opmath_dtype(param.dtype)
            grad = grads[i].to(dtype)
            if grad_scale is not None:
                grad = grad / grad_scale.to(dtype)
                grads[i].copy_(grad)
            if maximize:
                grad = -grad
            vmax = max_exp_avg_sqs[i].to(dtype) if amsgrad else None
            new_param, m, v, new_vmax = math_.step(
                param.to(dtype), grad, exp_avgs[i].to(dtype), exp_avg_sqs[i].to(dtype), vmax,
                float(state_steps[i].item()), lr=lr, beta1=beta1, beta2=beta2,
                weight_decay=weight_decay, eps=eps)
            param.copy_(new_param)
            exp_avgs[i].copy_(m)
            exp_avg_sqs[i].copy_(v)
            if new_vmax is not None:
                max_exp_avg_sqs[i].copy_(new_vmax)


def make_kernel(math_: AdamWMath, name: str, doc: str | None = None,
                module: str | None = None) -> Kernel:
    """A kernel with torch._fused_adamw_'s signature that steps with `math_`."""

    def kernel(params: Sequence[Tensor], grads: Sequence[Tensor], exp_avgs: Sequence[Tensor],
               exp_avg_sqs: Sequence[Tensor], max_exp_avg_sqs: Sequence[Tensor],
               state_steps: Sequence[Tensor], *, lr: float, beta1: float, beta2: float,
               weight_decay: float, eps: float, amsgrad: bool, maximize: bool,
               grad_scale: Tensor | None = None, found_inf: Tensor | None = None) -> None:
        _run(math_, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr=lr,
             beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=amsgrad,
             maximize=maximize, grad_scale=grad_scale, found_inf=found_inf)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = doc or type(math_).__doc__
    kernel.__module__ = module or __name__
    kernel.math = math_  # type: ignore[attr-defined]
    return kernel


adamw: Kernel = make_kernel(
    AdamWMath(), "adamw",
    "Reference AdamW kernel with torch._fused_adamw_'s signature (see the module docstring).")

__all__ = ["AdamWMath", "Kernel", "adamw", "make_kernel", "opmath_dtype"]
