"""A block-quantized AdamW in plain torch (its mutants: impl/mutants/quantized.py).

`BlockQuantAdamW` follows the scheme of 8-bit optimizers (Dettmers et al., arXiv:2110.02861) as
bitsandbytes lays it out, with no library imported: per block of 256 elements one float32
absmax, per element an 8-bit code into the dynamic map (signed for m, unsigned for v); tensors
under 4096 elements stay float32; the last block of a tensor may be partial. Each step
dequantizes, updates in float32 (torch's for-loop AdamW, op for op), steps the parameter with
the float32 new moments and requantizes them to the nearest code. State keys as bitsandbytes
has them: `state1`/`state2` (codes, or float32 moments for a small tensor), `absmax1`/
`absmax2`, `qmap1`/`qmap2`, `step`.

The map is built here from its published construction; tests/test_quantization.py checks it
equals the spec's (spec/quant_maps.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch


def dynamic_map(signed: bool = True, max_exponent_bits: int = 7,
                total_bits: int = 8) -> torch.Tensor:
    """The dynamic quantization map: a dynamic exponent, then a linear fraction whose bits
    shrink as the exponent grows (arXiv:1511.04561), sorted, with 0 and 1."""
    data: list[float] = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                    else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        bounds = torch.linspace(0.1, 1, items)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    if additional_items > 0:
        bounds = torch.linspace(0.1, 1, additional_items + 1)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data += [0.0, 1.0]
    return _ordered(data)


def _ordered(data: list[float]) -> torch.Tensor:
    return torch.tensor(sorted(data), dtype=torch.float32)


class BlockQuantAdamW(torch.optim.Optimizer):
    """Correct: passes the catalogue, its quantized states within the store model's bound."""

    block = 256
    min_numel = 4096

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameters: {betas}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    # --- the representation (one method per part: each mutant overrides one) -------------------

    def qmap(self, signed: bool) -> torch.Tensor:
        return dynamic_map(signed)

    def absmax(self, blocks: torch.Tensor) -> torch.Tensor:
        """Each block's scale: its absolute maximum."""
        return blocks.abs().amax(dim=1)

    def codes(self, y: torch.Tensor, qmap: torch.Tensor) -> torch.Tensor:
        """The nearest code of each scaled value (ties to the larger)."""
        hi = torch.searchsorted(qmap, y).clamp(1, qmap.numel() - 1)
        lo = hi - 1
        up = (qmap[hi] - y) <= (y - qmap[lo])
        return torch.where(up, hi, lo).to(torch.uint8)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1)
        pad = -flat.numel() % self.block
        return torch.cat([flat, flat.new_zeros(pad)]).view(-1, self.block)

    def quantize(self, x: torch.Tensor, qmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = self._blocks(x)
        scale = self.absmax(blocks)
        y = torch.where(scale[:, None] > 0, blocks / scale[:, None], blocks.new_zeros(()))
        codes = self.codes(y.reshape(-1), qmap)[: x.numel()]
        return codes.view(x.shape), scale

    def dequantize(self, codes: torch.Tensor, scale: torch.Tensor,
                   qmap: torch.Tensor) -> torch.Tensor:
        per = scale.repeat_interleave(self.block)[: codes.numel()]
        return (qmap[codes.reshape(-1).long()] * per).view(codes.shape)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's Optimizer casts every floating state to its parameter's dtype as it loads;
        this one keeps its moments, scales and maps in float32 whatever the parameter dtype
        (a bfloat16 parameter's would lose their precision): they are put back as saved."""
        super().load_state_dict(state_dict)
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params, strict=True):
            for k, v in state_dict["state"].get(i, {}).items():
                if torch.is_tensor(v) and v.is_floating_point():
                    self.state[p][k] = v.to(device=p.device, copy=True)

    # --- the step -------------------------------------------------------------------------------

    def corrections(self, beta1: float, beta2: float, t: int) -> tuple[Any, Any]:
        """1 - beta1^t and sqrt(1 - beta2^t), in double (torch's for-loop AdamW)."""
        return 1 - beta1 ** t, math.sqrt(1 - beta2 ** t)

    def _init(self, p: torch.Tensor) -> dict[str, Any]:
        st: dict[str, Any] = {"step": 0}
        if p.numel() < self.min_numel:
            st["state1"] = torch.zeros_like(p, dtype=torch.float32)
            st["state2"] = torch.zeros_like(p, dtype=torch.float32)
            return st
        blocks = math.ceil(p.numel() / self.block)
        for k, signed in (("1", True), ("2", False)):
            st["state" + k] = torch.zeros_like(p, dtype=torch.uint8)
            st["absmax" + k] = torch.zeros(blocks, dtype=torch.float32)
            st["qmap" + k] = self.qmap(signed)
        return st

    def _moment(self, st: dict[str, Any], k: str) -> torch.Tensor:
        x = st["state" + k]
        if x.dtype != torch.uint8:
            return x.clone()
        return self.dequantize(x, st["absmax" + k], st["qmap" + k])

    def _store(self, st: dict[str, Any], k: str, x: torch.Tensor) -> None:
        if st["state" + k].dtype != torch.uint8:
            st["state" + k].copy_(x)
            return
        codes, scale = self.quantize(x, st["qmap" + k])
        st["state" + k].copy_(codes)
        st["absmax" + k].copy_(scale)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st.update(self._init(p))
                st["step"] += 1
                t = st["step"]
                param = p.float()
                grad = p.grad.float()
                m, v = self._moment(st, "1"), self._moment(st, "2")
                param.mul_(1 - lr * wd)
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                correction1, root2 = self.corrections(beta1, beta2, t)
                step_size = lr / correction1
                denom = (v.sqrt() / root2).add_(eps)
                param.addcdiv_(m, denom, value=-step_size)
                p.copy_(param)
                self._store(st, "1", m)
                self._store(st, "2", v)
        return loss


class Float32CorrectionsBlockQuantAdamW(BlockQuantAdamW):
    """BlockQuantAdamW with torchao's bias corrections (torchao 0.18.0, torchao/optim/adam.py
    `single_param_adam`, shared by AdamW8bit, AdamW4bit, AdamWFp8): the step counter is a
    float32 tensor, so `1 - beta**step` is formed in float32 (beta rounded to float32 first),
    while the moments mix with `1 - beta` in double. Near beta = 1 the two no longer cancel
    (1 - float32(0.999999) is 1.3% off 1e-6): a precision defect, which the note on float32
    bias corrections must name on quantized tensors too, their stored moments judged by the
    store model in the note's control as in the verdict (tests/test_quantization.py)."""

    def corrections(self, beta1: float, beta2: float, t: int) -> tuple[Any, Any]:
        step = torch.tensor(float(t), dtype=torch.float32)
        return 1 - beta1 ** step, (1 - beta2 ** step).sqrt()
