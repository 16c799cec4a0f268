"""The Keras adapter: --impl resolves Keras' AdamW; the default spec fails it on eps placement
(bias.step_one); with eps=hat,counter=group declared it is judged in its own evaluation order
(spec/orders.py: keras) and passes everything but its real deviations (no hyperparameter
checks; float32 betas within 2^-25 of 1 become 1.0), listed in conformance/xfails/keras.txt; in
bfloat16 it fails, and the message says that beta2 became 1.0 (no step)."""

from __future__ import annotations

import pytest

# Imported first: it picks Keras' backend (torch) before keras itself is imported.
from adamw_conformance.adapters.keras_adapter import KerasAdapter  # noqa: E402, I001

pytest.importorskip("keras")
from adamw_conformance.core.targets import resolve  # noqa: E402
from keras.src.backend.torch.optimizers.torch_adamw import AdamW as TorchBackendAdamW  # noqa: E402

from tests.suite import run_suite  # noqa: E402

DECLARED = "--conventions=eps=hat,counter=group"


class KerasCounterOffByOne(TorchBackendAdamW):
    """Keras' own AdamW with one defect: its bias corrections count from 2 (t + 1). Subclasses
    the torch backend's class, which Keras substitutes for keras.optimizers.AdamW itself."""

    def _parallel_update_step(self, grads, variables, learning_rate):
        self._iterations.assign_add(1)
        super()._parallel_update_step(grads, variables, learning_rate)
        self._iterations.assign_sub(1)


@pytest.mark.parametrize("text", ["keras.optimizers.AdamW", "keras-adamw"])
def test_resolves(text):
    assert isinstance(resolve(text), KerasAdapter)


def test_default_spec_fails_on_eps_placement():
    out = run_suite("--impl=keras-adamw", "-k", "step_one")
    assert out.failed(), out.results
    assert any("bias.step_one" in m for m in out.messages.values())


def test_declared_convention_passes_in_float32():
    out = run_suite("--impl=keras-adamw", DECLARED, "--xfails=conformance/xfails/keras.txt")
    assert not out.failed(), {k: out.messages.get(k, "")[:400] for k in out.failed()}
    assert len(out.passed()) >= 19, out.results
    exact = [k for k in out.passed() if "test_exact.py" in k or "test_bias.py::test_step_one" in k]
    assert len(exact) >= 4, out.results


#: Keras' adapter without its declared order: judged in the spec's own order only.
WITHOUT_ORDER = KerasAdapter()
WITHOUT_ORDER.orders = ()


def test_declared_convention_judges_in_the_keras_order():
    # The same steps judged in the spec's order alone fail: Keras' float32 hyperparameter
    # arithmetic (1 - b2^t from float32 beta2) is outside that bound, inside its own.
    assert resolve("keras-adamw").orders == ("keras",)
    out = run_suite("--impl=keras-adamw", DECLARED, "-k", "one_step and plain")
    assert out.passed() and not out.failed(), out.messages
    out = run_suite(f"--impl={__name__}:WITHOUT_ORDER", DECLARED, "-k", "one_step and plain")
    assert out.failed(), out.results


def test_a_defect_is_still_caught_in_the_keras_order():
    out = run_suite(f"--impl={__name__}:KerasCounterOffByOne", DECLARED, "-k", "step_one")
    assert out.failed(), out.results
    (text,) = out.messages.values()
    assert "bias.step_one" in text and "x the bound" in text


def test_bfloat16_fails_and_says_beta2_became_one():
    out = run_suite("--impl=keras-adamw", "--dtype=bfloat16", DECLARED, "-k",
                    "one_step and plain")
    assert out.failed(), out.results
    text = "\n".join(out.messages.values())
    assert "rounds to 1.0 in bfloat16" in text and "bias correction" in text, text[:2000]
