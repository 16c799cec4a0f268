"""Options an implementation may accept (amsgrad, maximize): each is tested where accepted,
against the matching rule of the spec, and skipped where not."""

from __future__ import annotations

from dataclasses import replace

import pytest
from adamw_conformance.core.drive import Config
from adamw_conformance.core.rules import ADAM_FAMILY

VARIANTS = ("plain", "amsgrad", "maximize")


def variant_config(cfg: Config, variant: str) -> Config:
    """`cfg` judged against the spec variant; skips if the target does not accept the option."""
    if variant == "plain":
        return cfg
    if variant == "amsgrad" and cfg.model.rule_name not in ADAM_FAMILY:
        pytest.skip(f"amsgrad is a variant of the Adam family, not of rule {cfg.model.rule_name}")
    if not cfg.supports(variant):
        pytest.skip(f"{cfg.adapter.name} does not accept {variant}")
    model = cfg.model
    if variant == "amsgrad":
        model = replace(model, convention=replace(model.convention, amsgrad="raw_max"))
    else:
        model = replace(model, maximize=True)
    return replace(cfg, model=model)
