"""The optax adapter: --impl resolves optax.adamw, and optax's AdamW passes what it can be judged
on in float32 (the properties needing a missing gradient or loss scaling skip, with a reason)."""

from __future__ import annotations

import pytest

pytest.importorskip("optax")

from adamw_conformance.adapters.optax_adapter import OptaxAdapter  # noqa: E402
from adamw_conformance.core.targets import resolve  # noqa: E402

from tests.suite import run_suite  # noqa: E402


@pytest.mark.parametrize("text", ["optax.adamw", "optax-adamw", "optax:adamw"])
def test_resolves(text):
    adapter = resolve(text)
    assert isinstance(adapter, OptaxAdapter)
    assert adapter.name == "optax.adamw"


def test_passes_the_state_free_and_replayed_core():
    # exact.one_step is not among them: from replayed states at large t with beta2 near 1, optax's
    # float32 power float32(b2) ** count is far outside the bound (docs/adapters.md, "optax").
    out = run_suite("--impl=optax-adamw", "-k", "step_one or decay_only or "
                    "moments or uniform or power_of_two or round_trip or lr_zero or order")
    assert out.passed() and not out.failed(), out.messages


def test_skips_what_jax_cannot_express():
    out = run_suite("--impl=optax-adamw", "-k", "none_grad or late-start or grad_scaler")
    assert not out.failed() and not out.passed()
    assert all(v == "skipped" for v in out.results.values()), out.results
