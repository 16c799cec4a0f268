"""Audit an optimizer's parameter groups against a model: no weight decay on biases, normalisation
weights and (by default) embeddings, and every trainable parameter in some group.

    from adamw_conformance.param_groups import audit_param_groups

    audit_param_groups(model, optimizer).assert_ok()

A parameter *should not be decayed* when one of its names says so (a tied parameter has several
names and is judged once, on all of them):

- **bias**: its own name (the part after the last dot) has `bias` as an underscore-separated
  word: `bias`, `in_proj_bias` (MultiheadAttention), `bias_k`, `bias_ih_l0` (RNN/LSTM/GRU);
- **normalisation**: it belongs to a torch.nn normalisation layer (BatchNorm1d/2d/3d, SyncBatchNorm,
  InstanceNorm1d/2d/3d, LayerNorm, GroupNorm, RMSNorm) or to a class in `norm_types`; or, with
  `norm_by_name` (default on), it is at most 1-d and belongs to a module whose class name contains
  `Norm`, which catches the usual hand-written `RMSNorm`/`T5LayerNorm`/`LlamaRMSNorm`;
- **embedding**: it belongs to nn.Embedding or nn.EmbeddingBag, unless `decay_embeddings=True`;
- **1-d**: with `no_decay_1d=True`, any other parameter with at most one dimension (the rule of
  nanoGPT and timm, which also covers layer-scale gains and learned temperatures).

It is *decayed* when a group that holds it has `weight_decay > 0` (a group without the key counts
as 0). That is judged on the groups, frozen parameters included: torch skips a parameter without
a gradient, but unfreezing it later would decay it. Frozen parameters (requires_grad False) may be
absent from the optimizer; trainable ones may not. A parameter of the optimizer that the model
does not have is reported as well (the optimizer was built for another instance, or for
parameters outside `model`: pass a module that holds them all, e.g.
`nn.ModuleDict({"model": model, "loss": loss_fn})`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["NORM_TYPES", "EMBEDDING_TYPES", "ParamInfo", "ForeignParam", "GroupAudit",
           "audit_param_groups"]

#: torch.nn's normalisation layers with learnable parameters (lazy variants become these once
#: initialised; LocalResponseNorm and CrossMapLRN2d have no parameters).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.LayerNorm, nn.GroupNorm, nn.RMSNorm,
)
EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)

BIAS, NORM, EMBEDDING, ONE_DIM = "bias", "normalisation", "embedding", "1-d"


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of the model, once even when tied: its names, owners and groups."""

    names: tuple[str, ...]
    """Every qualified name it has in the model (several when tied), in model order."""
    module_types: tuple[str, ...]
    """Class name of the module owning it under each name."""
    shape: tuple[int, ...]
    trainable: bool
    no_decay_reason: str | None
    """Why it should not be decayed ("bias", "normalisation", "embedding", "1-d"), or None."""
    groups: tuple[int, ...]
    """Indices of the optimizer's param_groups that hold it (empty: in no group)."""
    weight_decays: tuple[float, ...]
    """The weight_decay of each of those groups."""

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def decayed(self) -> bool:
        return any(wd > 0 for wd in self.weight_decays)

    def columns(self) -> tuple[str, ...]:
        """Names, owner and shape, reason, groups: the report's columns."""
        owners = dict.fromkeys(self.module_types)  # unique, in order
        where = ", ".join(f"group {g} (weight_decay={wd:g})"
                          for g, wd in zip(self.groups, self.weight_decays, strict=True))
        notes = ", ".join(n for n in (self.no_decay_reason, "" if self.trainable else "frozen")
                          if n)
        return (" = ".join(self.names), f"{'/'.join(owners)} {list(self.shape)}", notes, where)

    def describe(self) -> str:
        return "  ".join(c for c in self.columns() if c)


@dataclass(frozen=True)
class ForeignParam:
    """A parameter the optimizer holds that is not one of the model's."""

    group: int
    position: int
    shape: tuple[int, ...]
    dtype: str

    def columns(self) -> tuple[str, ...]:
        return (f"group {self.group}, params[{self.position}]",
                f"tensor {list(self.shape)} {self.dtype}")

    def describe(self) -> str:
        return "  ".join(self.columns())


@dataclass(repr=False)
class GroupAudit:
    """What `audit_param_groups` found. `ok` is False when a no-decay parameter is decayed, a
    trainable parameter is in no group, the optimizer holds a parameter the model lacks, or (with
    `require_decay`) a decayable weight is only in weight_decay=0 groups."""

    params: list[ParamInfo]
    foreign: list[ForeignParam]
    group_decays: list[float]
    require_decay: bool = False
    wrongly_decayed: list[ParamInfo] = field(init=False)
    """Should not be decayed, but sits in a group with weight_decay > 0."""
    missing: list[ParamInfo] = field(init=False)
    """Trainable, but in no group: the optimizer never updates it."""
    undecayed: list[ParamInfo] = field(init=False)
    """Decayable weights only in weight_decay=0 groups (a failure only with require_decay)."""

    def __post_init__(self) -> None:
        self.wrongly_decayed = [p for p in self.params if p.no_decay_reason and p.decayed]
        self.missing = [p for p in self.params if p.trainable and not p.groups]
        self.undecayed = [p for p in self.params
                          if p.groups and not p.no_decay_reason and not p.decayed]

    def __repr__(self) -> str:
        return (f"GroupAudit(ok={self.ok}, params={len(self.params)}, "
                f"wrongly_decayed={len(self.wrongly_decayed)}, missing={len(self.missing)}, "
                f"foreign={len(self.foreign)}, undecayed={len(self.undecayed)})")

    def __str__(self) -> str:
        return self.report()

    @property
    def ok(self) -> bool:
        return not (self.wrongly_decayed or self.missing or self.foreign
                    or (self.require_decay and self.undecayed))

    def report(self) -> str:
        """Readable text: a headline, then one line per offending parameter, then a summary."""
        n_problems = (len(self.wrongly_decayed) + len(self.missing) + len(self.foreign)
                      + (len(self.undecayed) if self.require_decay else 0))
        decays = ", ".join(f"{wd:g}" for wd in self.group_decays)
        head = (f"parameter-group audit: {_count(len(self.params), 'parameter')}, "
                f"{_count(len(self.group_decays), 'group')} (weight_decay {decays or '-'}): ")
        lines = [head + ("ok" if self.ok else _count(n_problems, "problem"))]
        sections = [
            ("should not be decayed, but in a group with weight_decay > 0:", self.wrongly_decayed),
            ("trainable, but in no parameter group (never updated):", self.missing),
            ("in the optimizer, but not a parameter of the model:", self.foreign),
        ]
        if self.require_decay:
            sections.append(("weights in no group with weight_decay > 0 (require_decay):",
                             self.undecayed))
        for title, items in sections:
            if items:
                lines.append(title)
                lines.extend(_table([item.columns() for item in items]))
        decayed = sum(1 for p in self.params if p.decayed and not p.no_decay_reason)
        exempt = sum(1 for p in self.params if p.no_decay_reason and p.groups and not p.decayed)
        frozen = sum(1 for p in self.params if not p.trainable and not p.groups)
        summary = (f"correct: {_count(decayed, 'weight')} decayed, "
                   f"{_count(exempt, 'no-decay parameter')} in weight_decay=0 groups")
        if self.undecayed and not self.require_decay:
            summary += f"; {_count(len(self.undecayed), 'other weight')} undecayed (allowed)"
        if frozen:
            summary += f"; {_count(frozen, 'frozen parameter')} in no group (allowed)"
        lines.append(summary)
        return "\n".join(lines)

    def assert_ok(self) -> None:
        """Raise AssertionError with the report unless the audit is ok."""
        if not self.ok:
            raise AssertionError(self.report())


def audit_param_groups(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    decay_embeddings: bool = False,
    norm_types: Iterable[type[nn.Module]] = (),
    norm_by_name: bool = True,
    no_decay_1d: bool = False,
    require_decay: bool = False,
) -> GroupAudit:
    """Check `optimizer`'s param_groups against `model` (see the module docstring for the rules).

    decay_embeddings: treat nn.Embedding/EmbeddingBag weights as ordinary weights (the nanoGPT
        split decays them); by default they should not be decayed.
    norm_types: further module classes whose parameters are normalisation parameters.
    norm_by_name: also count as normalisation the <=1-d parameters of modules whose class name
        contains "Norm" (for hand-written norm layers).
    no_decay_1d: every parameter with at most one dimension should not be decayed.
    require_decay: a decayable weight that is only in weight_decay=0 groups is a failure too.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"audit_param_groups: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    groups = _param_groups(optimizer)
    extra = tuple(norm_types)
    for cls in extra:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"audit_param_groups: norm_types must hold nn.Module subclasses, got "
                            f"{cls!r}")
    norms = NORM_TYPES + extra

    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    tensors: dict[int, torch.Tensor] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for leaf, p in module.named_parameters(recurse=False, remove_duplicate=False):
            if isinstance(p, nn.parameter.UninitializedParameter):
                raise ValueError(f"audit_param_groups: {_join(mod_name, leaf)} of "
                                 f"{type(module).__name__} is not initialised yet (a lazy "
                                 f"module): run one forward pass before the audit")
            # A tied parameter (or a module reachable by two paths) comes once per name.
            owners.setdefault(id(p), []).append((_join(mod_name, leaf), module, leaf))
            tensors[id(p)] = p

    held: dict[int, list[int]] = {}
    foreign = []
    for g, (params, _) in enumerate(groups):
        for pos, p in enumerate(params):
            if id(p) in tensors:
                held.setdefault(id(p), []).append(g)
            else:
                foreign.append(ForeignParam(g, pos, tuple(p.shape), str(p.dtype).removeprefix(
                    "torch.")))

    infos = []
    for key, entries in owners.items():
        p = tensors[key]
        reasons = [_reason(leaf, module, p, norms, decay_embeddings, norm_by_name)
                   for _, module, leaf in entries]
        reason = next((r for r in reasons if r), None)
        if reason is None and no_decay_1d and p.dim() <= 1:
            reason = ONE_DIM
        in_groups = tuple(held.get(key, ()))
        infos.append(ParamInfo(
            names=tuple(name for name, _, _ in entries),
            module_types=tuple(type(module).__name__ for _, module, _ in entries),
            shape=tuple(p.shape), trainable=bool(p.requires_grad), no_decay_reason=reason,
            groups=in_groups, weight_decays=tuple(groups[g][1] for g in in_groups)))
    return GroupAudit(infos, foreign, [wd for _, wd in groups], require_decay=require_decay)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _join(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


def _reason(leaf: str, module: nn.Module, p: torch.Tensor, norms: tuple[type[nn.Module], ...],
            decay_embeddings: bool, norm_by_name: bool) -> str | None:
    if "bias" in leaf.split("_"):
        return BIAS
    if isinstance(module, norms):
        return NORM
    if norm_by_name and "Norm" in type(module).__name__ and p.dim() <= 1:
        return NORM
    if not decay_embeddings and isinstance(module, EMBEDDING_TYPES):
        return EMBEDDING
    return None


def _param_groups(optimizer: Any) -> list[tuple[list[torch.Tensor], float]]:
    """(params, weight_decay) per group, with a readable error for anything that is not an
    optimizer with torch-style param_groups."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list | tuple):
        raise TypeError(f"audit_param_groups: optimizer must have torch-style param_groups (a "
                        f"list of dicts with 'params'); got {type(optimizer).__name__}")
    out = []
    for g, group in enumerate(groups):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"audit_param_groups: param_groups[{g}] is not a dict with 'params'")
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for pos, p in enumerate(params):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"audit_param_groups: param_groups[{g}]['params'][{pos}] is a "
                                f"{type(p).__name__}, not a tensor")
        wd = group.get("weight_decay", 0.0)
        try:
            wd = float(wd)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"audit_param_groups: param_groups[{g}]['weight_decay'] is not a "
                            f"number: {wd!r}") from None
        if math.isnan(wd):
            raise ValueError(f"audit_param_groups: param_groups[{g}]['weight_decay'] is NaN")
        out.append((params, wd))
    return out
