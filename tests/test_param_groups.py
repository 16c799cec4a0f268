"""The parameter-group audit on real torch.nn models: correct splits pass, naive ones fail naming
exactly the offending parameters, and the pytest fixture fails a user's test with the report."""

from __future__ import annotations

import tomllib

import pytest
import torch
from adamw_conformance.param_groups import GroupAudit, audit_param_groups
from torch import nn

from tests.suite import ROOT

pytest_plugins = ["pytester"]

WD = 0.01


class TinyLM(nn.Module):
    """Embedding, two post-norm encoder layers, a final LayerNorm and a head tied to the
    embedding."""

    def __init__(self, vocab: int = 50, d: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=32, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.emb(tokens)))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


class MyRMSNorm(nn.Module):
    """A hand-written RMSNorm, as in most LLM code bases: caught by the name heuristic."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class WeightNormLinear(nn.Module):
    """'Norm' in the name but a 2-d weight: a real weight, not a normalisation gain."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d, d))


class Gain(nn.Module):
    """A layer-scale gain: 1-d, in a class the heuristic does not know."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.full((d,), 0.1))


class NormZoo(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)
        self.rms = nn.RMSNorm(d)
        self.gn = nn.GroupNorm(2, d)
        self.own = MyRMSNorm(d)
        self.wn = WeightNormLinear(d)
        self.gain = Gain(d)


def minGPT_split(model: nn.Module, decay_types: tuple[type[nn.Module], ...] = (
        nn.Linear, nn.Conv2d, nn.MultiheadAttention), wd: float = 0.1) -> torch.optim.AdamW:
    """The usual split of training scripts (minGPT's): weights of Linear/Conv/attention are
    decayed; biases, norm and embedding weights are not. A tied parameter goes where its first
    owner puts it."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for leaf, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            is_weight = leaf.endswith("weight") and isinstance(module, decay_types)
            (decay if is_weight else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                             weight_decay=wd)


def nanoGPT_split(model: nn.Module, wd: float = 0.1) -> torch.optim.AdamW:
    """nanoGPT's split: every parameter with 2 or more dimensions is decayed (embeddings too)."""
    params = list(model.parameters())
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2]},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0}],
                             weight_decay=wd)


def naive(model: nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), weight_decay=WD)


def names(items: list) -> list[str]:
    return [" = ".join(p.names) for p in items]


def encoder_no_decay(layers: int = 2) -> list[str]:
    per_layer = ["self_attn.in_proj_bias", "self_attn.out_proj.bias", "linear1.bias",
                 "linear2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]
    return [f"encoder.layers.{i}.{leaf}" for i in range(layers) for leaf in per_layer] + [
        "encoder.norm.weight", "encoder.norm.bias"]


# --- the transformer -------------------------------------------------------------------------

def test_transformer_usual_split_passes() -> None:
    model = TinyLM()
    audit = audit_param_groups(model, minGPT_split(model))
    assert audit.ok, audit.report()
    assert audit.report().splitlines()[0].endswith(": ok")
    audit.assert_ok()


def test_transformer_naive_fails_with_exact_names() -> None:
    model = TinyLM()
    audit = audit_param_groups(model, naive(model))
    assert not audit.ok
    assert str(audit) == audit.report() and "ok=False" in repr(audit)
    assert names(audit.wrongly_decayed) == ["emb.weight = head.weight", *encoder_no_decay()]
    assert not audit.missing and not audit.foreign
    reasons = {p.name: p.no_decay_reason for p in audit.wrongly_decayed}
    assert reasons["emb.weight"] == "embedding"
    assert reasons["encoder.layers.0.norm1.weight"] == "normalisation"
    assert reasons["encoder.layers.1.self_attn.in_proj_bias"] == "bias"
    assert all(p.groups == (0,) and p.weight_decays == (WD,) for p in audit.wrongly_decayed)
    with pytest.raises(AssertionError, match=r"encoder\.layers\.0\.norm1\.weight"):
        audit.assert_ok()


def test_tied_weights_reported_once_with_all_names() -> None:
    model = TinyLM()
    audit = audit_param_groups(model, naive(model))
    tied = [p for p in audit.params if "emb.weight" in p.names]
    assert len(tied) == 1 and tied[0].names == ("emb.weight", "head.weight")
    assert tied[0].module_types == ("Embedding", "Linear")
    lines = [line for line in audit.report().splitlines() if "head.weight" in line]
    assert len(lines) == 1 and "emb.weight = head.weight" in lines[0]
    assert len(audit.params) == len(list(model.parameters()))


def test_embedding_option() -> None:
    model = TinyLM()
    # nanoGPT decays the (tied) embedding: wrong by default, fine with decay_embeddings.
    audit = audit_param_groups(model, nanoGPT_split(model))
    assert names(audit.wrongly_decayed) == ["emb.weight = head.weight"]
    assert audit_param_groups(model, nanoGPT_split(model), decay_embeddings=True).ok
    # The minGPT split leaves it undecayed: allowed either way, unless decay is required.
    assert audit_param_groups(model, minGPT_split(model), decay_embeddings=True).ok
    strict = audit_param_groups(model, minGPT_split(model), decay_embeddings=True,
                                require_decay=True)
    assert names(strict.undecayed) == ["emb.weight = head.weight"] and not strict.ok
    assert "require_decay" in strict.report()


# --- the CNN ---------------------------------------------------------------------------------

def test_cnn_usual_split_passes() -> None:
    model = SmallCNN()
    model(torch.randn(2, 3, 8, 8))
    audit_param_groups(model, minGPT_split(model)).assert_ok()


def test_cnn_naive_fails_with_exact_names() -> None:
    model = SmallCNN()
    audit = audit_param_groups(model, naive(model))
    assert names(audit.wrongly_decayed) == ["conv1.bias", "bn1.weight", "bn1.bias", "bn2.weight",
                                            "bn2.bias", "fc.bias"]
    assert {p.name: p.module_types[0] for p in audit.wrongly_decayed}["bn1.weight"] == \
        "BatchNorm2d"


# --- other norms, the heuristic and the options ----------------------------------------------

def test_norm_zoo() -> None:
    model = NormZoo()
    audit = audit_param_groups(model, naive(model))
    assert names(audit.wrongly_decayed) == ["proj.bias", "rms.weight", "gn.weight", "gn.bias",
                                            "own.weight"]
    by_name = audit_param_groups(model, naive(model), norm_by_name=False)
    assert "own.weight" not in names(by_name.wrongly_decayed)
    extra = audit_param_groups(model, naive(model), norm_types=[Gain])
    assert names(extra.wrongly_decayed)[-1] == "gain.g"
    one_dim = audit_param_groups(model, naive(model), no_decay_1d=True)
    assert [(p.name, p.no_decay_reason) for p in one_dim.wrongly_decayed][-1] == ("gain.g", "1-d")
    split = torch.optim.AdamW([{"params": [model.proj.weight, model.wn.weight]},
                               {"params": [p for n, p in model.named_parameters()
                                           if n not in ("proj.weight", "wn.weight")],
                                "weight_decay": 0.0}], weight_decay=WD)
    assert audit_param_groups(model, split, norm_types=[Gain], no_decay_1d=True).ok


def test_rnn_and_attention_biases_by_name() -> None:
    model = nn.ModuleDict({"lstm": nn.LSTM(4, 8),
                           "attn": nn.MultiheadAttention(8, 2, bias=False, add_bias_kv=True)})
    audit = audit_param_groups(model, naive(model))
    assert names(audit.wrongly_decayed) == ["lstm.bias_ih_l0", "lstm.bias_hh_l0", "attn.bias_k",
                                            "attn.bias_v"]


# --- parameters in no group, foreign and frozen parameters -----------------------------------

def test_parameter_in_no_group_is_reported() -> None:
    model = SmallCNN()
    opt = minGPT_split(model)
    head = {id(model.fc.weight), id(model.fc.bias)}
    for group in opt.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in head]
    audit = audit_param_groups(model, opt)
    assert names(audit.missing) == ["fc.weight", "fc.bias"]
    assert not audit.ok and not audit.wrongly_decayed
    assert "trainable, but in no parameter group" in audit.report()


def test_optimizer_of_another_instance() -> None:
    model, other = SmallCNN(), SmallCNN()
    audit = audit_param_groups(model, minGPT_split(other))
    assert len(audit.missing) == len(audit.params) == len(list(model.parameters()))
    assert len(audit.foreign) == len(list(other.parameters()))
    assert "not a parameter of the model" in audit.report()


def test_frozen_parameters_may_be_left_out() -> None:
    model = TinyLM()
    model.emb.weight.requires_grad_(False)
    opt = minGPT_split(model)
    opt.param_groups[1]["params"] = [p for p in opt.param_groups[1]["params"] if p.requires_grad]
    audit = audit_param_groups(model, opt)
    assert audit.ok, audit.report()
    assert "1 frozen parameter in no group" in audit.report()
    # In a decayed group it is still reported: unfreezing it would decay it.
    frozen = audit_param_groups(model, naive(model))
    assert names(frozen.wrongly_decayed)[0] == "emb.weight = head.weight"
    assert "embedding, frozen" in frozen.report()


def test_require_decay() -> None:
    model = SmallCNN()
    opt = torch.optim.AdamW(model.parameters(), weight_decay=0.0)
    assert audit_param_groups(model, opt).ok
    audit = audit_param_groups(model, opt, require_decay=True)
    assert names(audit.undecayed) == ["conv1.weight", "conv2.weight", "fc.weight"]
    assert not audit.ok


def test_group_without_weight_decay_key_counts_as_zero() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # SGD's default weight_decay is 0
    del opt.param_groups[0]["weight_decay"]
    assert isinstance(audit_param_groups(model, opt), GroupAudit)
    assert audit_param_groups(model, opt).ok


def test_documented_example_is_the_real_report() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    report = audit_param_groups(model, naive(model)).report()
    readme = (ROOT / "docs" / "param-groups.md").read_text()
    assert "\n".join("    " + line for line in report.splitlines()) in readme


# --- bad input -------------------------------------------------------------------------------

def test_bad_input_is_a_readable_error() -> None:
    model = SmallCNN()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got list"):
        audit_param_groups(list(model.parameters()), naive(model))
    with pytest.raises(TypeError, match="torch-style param_groups.*got SmallCNN"):
        audit_param_groups(model, model)
    with pytest.raises(TypeError, match="norm_types must hold nn.Module subclasses"):
        audit_param_groups(model, naive(model), norm_types=["LayerNorm"])
    opt = naive(model)
    opt.param_groups[0]["weight_decay"] = "0.1 please"
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['weight_decay'\] is not a number"):
        audit_param_groups(model, opt)
    opt = naive(model)
    opt.param_groups[0]["params"].append("fc.weight")
    with pytest.raises(TypeError, match=r"\['params'\]\[9\] is a str, not a tensor"):
        audit_param_groups(model, opt)
    lazy = nn.Sequential(nn.LazyLinear(4))
    with pytest.raises(ValueError, match="0.weight of LazyLinear is not initialised"):
        audit_param_groups(lazy, torch.optim.AdamW(lazy.parameters()))


# --- the fixture -----------------------------------------------------------------------------

USER_TEST = """
import torch
from torch import nn


def build_model():
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))


def test_naive_setup(param_group_audit):
    model = build_model()
    param_group_audit(model, torch.optim.AdamW(model.parameters(), weight_decay=0.01))


def test_split_setup(param_group_audit):
    model = build_model()
    decay = [model[0].weight, model[2].weight]
    rest = [model[0].bias, model[1].weight, model[1].bias, model[2].bias]
    opt = torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}],
                            weight_decay=0.01)
    assert param_group_audit(model, opt).ok
"""


@pytest.fixture(scope="module")
def adamw_imported() -> None:
    """Construct an AdamW before pytester snapshots sys.modules: the first one imports modules
    lazily (triton, where installed), and pytester's teardown would drop them mid-life, which
    their native extensions report as leaks at exit."""
    naive(nn.Linear(1, 1))


def test_fixture_from_a_user_test(adamw_imported: None, pytester: pytest.Pytester) -> None:
    # The plugin as pyproject's pytest11 entry point declares it. Its name is its module, so
    # that `-p` here and the entry point of an installed copy are one registration, not two.
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    (name, plugin), = entry["pytest11"].items()
    assert name == plugin == "adamw_conformance.plugin"
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest("-p", plugin, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*parameter-group audit: 6 parameters, 1 group (weight_decay 0.01): 4 problems",
        "*should not be decayed, but in a group with weight_decay > 0:",
        "*0.bias * Linear [[]8[]] * bias * group 0 (weight_decay=0.01)",
        "*1.weight * LayerNorm [[]8[]] * normalisation * group 0 (weight_decay=0.01)",
    ])
    # pytest.fail(pytrace=False): the report, not a traceback into the plugin.
    assert "def audit" not in result.stdout.str()
    assert "audit_plugin.py" not in result.stdout.str()
