"""The Keras adapter: --impl resolves Keras' AdamW; the default spec fails it at the first step
(eps before v's bias correction, and 1 - beta^t formed from float32 betas); under
eps=hat,counter=group the exact properties that do not depend on 1 - beta^t pass."""

from __future__ import annotations

import pytest

# Imported first: it picks Keras' backend (torch) before keras itself is imported.
from conformance.adapters.keras_adapter import KerasAdapter  # noqa: E402, I001

pytest.importorskip("keras")
from conformance.targets import resolve  # noqa: E402
from tests.suite import run_suite  # noqa: E402


@pytest.mark.parametrize("text", ["keras.optimizers.AdamW", "keras-adamw"])
def test_resolves(text):
    assert isinstance(resolve(text), KerasAdapter)


def test_default_spec_fails_at_the_first_step():
    out = run_suite("--impl=keras-adamw", "-k", "step_one")
    assert out.failed(), out.results
    assert any("bias.step_one" in m for m in out.messages.values())


def test_declared_convention_passes_the_exact_properties():
    # bias.step_one itself still fails under eps=hat where beta2 is within float32's spacing of
    # 1: Keras forms 1 - beta2^t from float32(beta2) (README, "optax and Keras"); and
    # decouple.decay_only can fail by a few ulps, as Keras casts lr (and lr * wd) to float32.
    out = run_suite("--impl=keras-adamw", "--conventions=eps=hat,counter=group", "-k",
                    "power_of_two or round_trip")
    assert out.passed() and not out.failed(), out.messages
