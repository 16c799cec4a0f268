"""Options an implementation may accept (amsgrad, maximize): each is tested where accepted,
against the matching rule of the spec, and skipped where not."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conformance.drive import Config

VARIANTS = ("plain", "amsgrad", "maximize")


def variant_config(cfg: Config, variant: str) -> Config:
    """`cfg` judged against the spec variant; skips if the target does not accept the option."""
    if variant == "plain":
        return cfg
    if not cfg.supports(variant):
        pytest.skip(f"{cfg.adapter.name} does not accept {variant}")
    model = cfg.model
    if variant == "amsgrad":
        model = replace(model, convention=replace(model.convention, amsgrad="raw_max"))
    else:
        model = replace(model, maximize=True)
    return replace(cfg, model=model)
