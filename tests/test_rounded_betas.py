"""The failure note for betas that a low-precision dtype rounds to 1.0 (Keras and optax cast
their hyperparameters to the parameter dtype)."""

from adamw_conformance.core import checks


def test_names_beta2_in_bfloat16_only():
    hyper = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    notes = checks.rounded_to_one("bfloat16", [hyper])
    assert len(notes) == 1 and notes[0].startswith("beta2=0.999 rounds to 1.0 in bfloat16")
    assert checks.rounded_to_one("float32", [hyper]) == []


def test_names_a_beta_whose_one_minus_moves_far():
    hyper = {"lr": 1e-3, "beta1": 0.99, "beta2": 0.5, "eps": 1e-8, "weight_decay": 0.0}
    notes = checks.rounded_to_one("bfloat16", [hyper])
    assert len(notes) == 1 and notes[0].startswith("beta1=0.99 is 0.98828125 in bfloat16")
    assert "off by 17%" in notes[0]
    assert checks.rounded_to_one("float32", [hyper]) == []
