"""The Triton AdamW kernel (impl.kernels.triton_adamw) under the gate.

On a machine without a GPU it runs in Triton's interpreter; skipped where triton is not installed.

- The whole catalogue passes (ci profile) in float32 and, under -m slow, bfloat16 (the bf16
  store is checked directly below), run as a user would:
  `pytest conformance --impl=impl.kernels.triton_adamw:adamw --dtype=...`.
- Directly: one step is within the bound of the `fused` evaluation order alone (the order the
  kernel claims to follow), over the wide inputs of test_bounds, plain, AMSGrad and maximize;
  bf16/fp16 results are the float32 results rounded to nearest even (the interpreter's own
  float32 -> bfloat16 conversion truncates; the kernel must not); empty and 0-dim tensors; the
  grad_scale / found_inf convention of torch's fused kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="needs the triton extra: pip install -e '.[triton]'")

from adamw_conformance.spec.bounds import Precision  # noqa: E402

from impl.kernels.triton_adamw import adamw  # noqa: E402
from tests.helpers import Case, bounds, check_all, describe, exact, kernel_step  # noqa: E402
from tests.suite import run_suite  # noqa: E402
from tests.test_bounds import HYPERS, wide_inputs  # noqa: E402

IMPL = "--impl=impl.kernels.triton_adamw:adamw"


@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.slow)])
def test_passes_catalogue(dtype: str) -> None:
    out = run_suite(IMPL, f"--dtype={dtype}")
    assert out.rc == 0, "\n\n".join(f"{k}:\n{v}" for k, v in out.messages.items())
    assert out.passed(), "no conformance test ran"


def _case(dtype: torch.dtype, k: int, variant: str) -> Case:
    hyper, t = HYPERS[k]
    rng = np.random.default_rng(1000 + k)
    a = wide_inputs(rng, 200, hyper, t)
    low = {n: torch.tensor(a[n], dtype=torch.float64).to(dtype) for n in ("theta", "g")}
    # The kernel keeps its state in float32 whatever the parameter dtype.
    state = {n: torch.tensor(a[n], dtype=torch.float32) for n in ("m", "v")}
    vmax = None
    if variant == "amsgrad":
        vmax = (state["v"].double() * torch.tensor(rng.uniform(0.5, 2.0, 200))).float()
    return Case(low["theta"], low["g"], state["m"], state["v"], dict(hyper), t, vmax,
                maximize=variant == "maximize")


@pytest.mark.parametrize("variant", ["plain", "amsgrad", "maximize"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_within_fused_order_bound(dtype: torch.dtype, variant: str) -> None:
    """The kernel follows spec.orders.fused: within that order's bound alone, every output."""
    prec = Precision.of(dtype, state=torch.float32)
    for k in range(len(HYPERS)):
        case = _case(dtype, k, variant)
        got = kernel_step(adamw, case)
        result, bound = exact(case), bounds(case, prec, only=["fused"])
        for name, c in check_all(got, result, bound).items():
            bad = c.violations
            assert bad.size == 0, (f"{name} outside the fused order's bound ({variant}, "
                                   f"{HYPERS[k][0]}, t={case.t}):\n"
                                   + describe(case, got, result, bound, name, bad))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_store_rounds_to_nearest_even(dtype: torch.dtype) -> None:
    """All arithmetic is float32, so the bf16/fp16 result is the float32 kernel's result on the
    same values, rounded once by torch (round to nearest even), bitwise."""
    gen = torch.Generator().manual_seed(7)
    n = 4099  # several blocks, a ragged tail
    theta = torch.randn(n, generator=gen).to(dtype)
    g = torch.randn(n, generator=gen).to(dtype)
    m, v = 0.1 * torch.randn(n, generator=gen), 0.01 * torch.rand(n, generator=gen)
    hyper = dict(lr=0.3, beta1=0.9, beta2=0.999, weight_decay=0.1, eps=1e-8)
    low, high = [theta.clone()], [theta.float()]
    for p, grad in ((low, g.clone()), (high, g.float())):
        adamw(p, [grad], [m.clone()], [v.clone()], [], [torch.tensor(3.0)], **hyper,
              amsgrad=False, maximize=False)
    assert not torch.equal(low[0], theta), "the step changed nothing: no rounding was tested"
    assert torch.equal(low[0], high[0].to(dtype))


def test_empty_and_zero_dim_tensors() -> None:
    """An empty tensor is left alone; a 0-dim tensor steps like the same element of a vector."""
    hyper = dict(lr=1e-2, beta1=0.9, beta2=0.999, weight_decay=0.1, eps=1e-8)
    values = [torch.tensor(v) for v in (1.5, -0.25, 0.01, 0.002)]  # theta, g, m, v
    scalar = [x.clone() for x in values]
    vector = [x.reshape(1).clone() for x in values]
    empty = [torch.empty(0) for _ in values]
    adamw([scalar[0], empty[0], vector[0]], [scalar[1], empty[1], vector[1]],
          [scalar[2], empty[2], vector[2]], [scalar[3], empty[3], vector[3]], [],
          [torch.tensor(2.0)] * 3, **hyper, amsgrad=False, maximize=False)
    assert all(e.shape == (0,) for e in empty)
    assert scalar[0].shape == ()
    for s, v in zip(scalar, vector, strict=True):
        assert torch.equal(s.reshape(1), v)
    assert scalar[0].item() != 1.5


def _tensors(dtype: torch.dtype) -> dict[str, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    n = 257
    return {"params": [torch.randn(n, generator=gen).to(dtype)],
            "grads": [torch.randn(n, generator=gen).to(dtype)],
            "exp_avgs": [0.1 * torch.randn(n, generator=gen)],
            "exp_avg_sqs": [0.01 * torch.rand(n, generator=gen)],
            "state_steps": [torch.tensor(3.0)]}


def _call(ts: dict[str, list[torch.Tensor]], **kw) -> None:
    adamw(ts["params"], ts["grads"], ts["exp_avgs"], ts["exp_avg_sqs"], [], ts["state_steps"],
          lr=1e-2, beta1=0.9, beta2=0.999, weight_decay=0.1, eps=1e-8, amsgrad=False,
          maximize=False, **kw)


def test_found_inf_skips_everything() -> None:
    ts = _tensors(torch.float32)
    before = {k: [x.clone() for x in v] for k, v in ts.items()}
    _call(ts, grad_scale=torch.tensor(4.0), found_inf=torch.tensor(1.0))
    for k, tensors in ts.items():
        assert all(torch.equal(a, b) for a, b in zip(tensors, before[k], strict=True)), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_grad_scale_unscales(dtype: torch.dtype) -> None:
    """A power-of-two scale is exact: the step equals the unscaled one bitwise, and the gradients
    are written back unscaled, as torch's fused kernels do."""
    plain, scaled = _tensors(dtype), _tensors(dtype)
    scaled["grads"] = [g * 1024 for g in scaled["grads"]]
    _call(plain)
    _call(scaled, grad_scale=torch.tensor(1024.0), found_inf=torch.tensor(0.0))
    for k in plain:
        assert all(torch.equal(a, b) for a, b in zip(plain[k], scaled[k], strict=True)), k


def test_bad_input_is_a_readable_error() -> None:
    ts = _tensors(torch.float32)
    ts["exp_avgs"] = [x.to(torch.bfloat16) for x in ts["exp_avgs"]]
    with pytest.raises(ValueError, match="state must be float32"):
        _call(ts)
    ts = _tensors(torch.float64)
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        _call(ts)


def test_declares_float32_state() -> None:
    from adamw_conformance.core.targets import resolve

    assert resolve("impl.kernels.triton_adamw:adamw").state_dtype == "float32"
