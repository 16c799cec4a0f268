"""Options an implementation may accept (amsgrad, maximize): each is tested where accepted,
against the matching rule of the spec, and skipped where not. An option is switched on either by
a test's variant or by `--impl` fixing it ('torch.optim.AdamW(amsgrad=True)'); both select the
spec's variant the same way (`selected`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from adamw_conformance.core import calls
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Model
from adamw_conformance.core.rules import ADAM_FAMILY

VARIANTS = ("plain", "amsgrad", "maximize")


def options(variant: str) -> dict[str, Any]:
    """The options that switch `variant` on: {} for plain, else {variant: True}."""
    return {} if variant == "plain" else {variant: True}


def selected(model: Model, switched_on: Mapping[str, Any]) -> Model:
    """The spec variant that the options switched on select: amsgrad (in the Adam family) keeps
    the running maximum of v, in PyTorch's raw_max form unless the conventions declare another;
    maximize ascends."""
    if (switched_on.get("amsgrad") is True and model.rule_name in ADAM_FAMILY
            and model.convention.amsgrad == "none"):
        model = replace(model, convention=replace(model.convention, amsgrad="raw_max"))
    if switched_on.get("maximize") is True:
        model = replace(model, maximize=True)
    return model


def variant_config(cfg: Config, variant: str) -> Config:
    """`cfg` judged against the spec variant; skips if the target does not accept the option,
    or refuses it at construction or on use (calls.refusal, with what it raised)."""
    if variant == "plain":
        return cfg
    if variant == "amsgrad" and cfg.model.rule_name not in ADAM_FAMILY:
        pytest.skip(f"amsgrad is a variant of the Adam family, not of rule {cfg.model.rule_name}")
    if not cfg.supports(variant):
        pytest.skip(f"{cfg.adapter.name} does not accept {variant}")
    refused = calls.refusal(cfg, options(variant))
    if refused is not None:
        pytest.skip(refused)
    # What the orders probe (core/forms.py) ruled out, it saw without the option: the variant is
    # judged by every order, as a target that takes another code path with it may.
    return replace(cfg, model=replace(selected(cfg.model, options(variant)),
                                      ruled_out=frozenset()))
