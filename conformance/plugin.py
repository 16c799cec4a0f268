"""The pytest plugin of the conformance suite: options, profiles, header, xfails, fixtures.

Registered through the `pytest11` entry point, so it is loaded in every pytest session of an
environment that installs the package. It stays inert (its options registered, nothing imported
beyond pytest and Hypothesis, no target resolved) unless the session runs the suite: a collected
path inside this package (`pytest --pyargs adamw_conformance`, or the path of its folder) or an
explicit `--impl`. The session's state lives in `config.stash`.

It also defines the `param_group_audit` fixture for any project that installs the package:

    def test_optimizer_setup(param_group_audit):
        model = build_model()
        param_group_audit(model, build_optimizer(model))
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, Phase, settings

if TYPE_CHECKING:  # the suite's modules import torch and SymPy: only when the suite runs
    from adamw_conformance.core.drive import Config
    from adamw_conformance.core.judge import Model
    from adamw_conformance.param_groups import GroupAudit
    from adamw_conformance.spec.conventions import Convention

DTYPES = ("float32", "float64", "bfloat16", "float16")
DEFAULT_IMPL = "torch.optim.AdamW"
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
             HealthCheck.function_scoped_fixture]
# ci gates: derandomized, and no shrinking, so a red verdict comes in seconds (an mpmath-judged
# example costs ~0.1 s and shrinking takes hundreds); dev and thorough shrink to a minimal example.
settings.register_profile("ci", max_examples=8, derandomize=True, deadline=None,
                          suppress_health_check=_SUPPRESS, print_blob=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
# sweep: the ci gate's examples and phases, but drawn from --hypothesis-seed, so that a seed
# sweep (the false-alarm sweep of `python -m adamw_conformance.tools.detection`) sees different
# examples.
settings.register_profile("sweep", parent=settings.get_profile("ci"), derandomize=False,
                          database=None)
settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=_SUPPRESS, print_blob=True)
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=_SUPPRESS, print_blob=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "adamw-conformance")
    group.addoption("--impl", default=None,
                    help="implementation under test: dotted path (pkg.mod.Attr or pkg.mod:Attr) "
                         "to an Optimizer subclass, functional kernel or adapter, optionally with "
                         "fixed keywords 'Path(foreach=True)'; or torch-loop, torch-foreach, "
                         "torch-fused, torch-fused-kernel (default: torch.optim.AdamW)")
    group.addoption("--device", default="cpu", help="cpu (default) or cuda")
    group.addoption("--dtype", default="float32", choices=DTYPES,
                    help="parameter dtype (default float32)")
    group.addoption("--compute-dtype", default=None, choices=DTYPES,
                    help="the dtype the implementation declares it computes in "
                         "(default: float32 for bf16/fp16 parameters, else the dtype)")
    group.addoption("--hyper-dtype", default=None, choices=("float32", "bfloat16", "float16"),
                    help="the dtype the implementation declares it takes its hyperparameters "
                         "and their arithmetic in (1 - beta2, lr * weight_decay, beta^t), as a C "
                         "float kernel does with float32 (default: exact, Python floats and "
                         "double arithmetic; see docs/tolerance-model.md)")
    group.addoption("--conventions", default="default",
                    help="AdamW conventions the implementation claims, e.g. 'eps=hat' or "
                         "'decay_coupling=independent,counter=group' (see README), or 'auto': "
                         "the ones python -m adamw_conformance.tools.fingerprint finds")
    group.addoption("--xfails", default=None,
                    help="file of test ids or catalogue ids expected to fail, one per line, "
                         "# comments allowed")
    group.addoption("--impl-timeout", type=float, default=60.0,
                    help="seconds one call into the implementation may take (default 60)")
    group.addoption("--report", default=None, metavar="NAME",
                    help="after the run, write an audit report to REPORT_DIR/NAME/ (report.md, "
                         "report.json, report.html, plots/)")
    group.addoption("--report-dir", default=None,
                    help="where --report writes (default: reports/ under the rootdir)")
    group.addoption("--rule", default="auto",
                    help="the spec rule to judge against: auto (default: what the target is, "
                         "e.g. torch.optim.SGD -> sgd, Adam -> adam_l2, else adamw) or a rule "
                         "name: sgd, momentum, nesterov, adagrad, rmsprop, adam, adam_l2, adamw, "
                         "... (see README)")


PACKAGE_DIR = Path(__file__).resolve().parent
_CONFIG = pytest.StashKey["Config"]()
_AUTO_NOTE = pytest.StashKey[str]()


def active(config: pytest.Config) -> bool:
    """Whether this session runs the suite (see the module's docstring)."""
    if config.getoption("--impl", None) is not None:
        return True
    for arg in config.args:
        arg = arg.split("::", 1)[0]
        if config.getoption("pyargs", False) and (arg == "adamw_conformance"
                                                  or arg.startswith("adamw_conformance.")):
            return True
        path = Path(config.invocation_params.dir, arg).resolve()
        if path == PACKAGE_DIR or PACKAGE_DIR in path.parents:
            return True
    return False


def _config(config: pytest.Config) -> Config:
    cached = config.stash.get(_CONFIG, None)
    if cached is not None:
        return cached
    from adamw_conformance.adapters.base import declared_hyper, declared_orders
    from adamw_conformance.core import rules
    from adamw_conformance.core.drive import Config
    from adamw_conformance.core.judge import Model
    from adamw_conformance.core.strategies import use_rule
    from adamw_conformance.core.targets import TargetError, resolve
    from adamw_conformance.spec.conventions import Convention

    text = config.getoption("--impl") or DEFAULT_IMPL
    try:
        if config.getoption("--impl-timeout") <= 0:
            raise ValueError(f"--impl-timeout={config.getoption('--impl-timeout'):g}: give a "
                             "positive number of seconds")
        adapter = resolve(text)
        conventions = config.getoption("--conventions")
        rule = rules.choose(config.getoption("--rule"), adapter)
        if conventions.strip() == "auto":
            convention, note, shown = _auto_conventions(config, adapter, rule, text)
            if shown and config.getoption("--rule") == rules.AUTO and not rules.declared(adapter):
                # Nothing names the target's rule: judge the one its behaviour shows (optax.adam
                # is Adam without decay, optax.sgd is SGD), not AdamW by default.
                rule = shown
            config.stash[_AUTO_NOTE] = note
        else:
            convention = Convention.parse(conventions)
        model = _fixed_variant(Model(rule, convention, declared_orders=declared_orders(adapter)),
                               adapter)
        model.rule  # noqa: B018 - conventions on a non-Adam rule are a usage error, said now
    except (TargetError, ValueError) as e:
        raise pytest.UsageError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - e.g. an adapter class whose constructor raises
        raise pytest.UsageError(f"--impl={text!r}: setting up the target raised "
                                f"{type(e).__name__}: {e}") from None
    use_rule(rule, getattr(adapter, "pinned", None))
    cfg = Config(adapter, model, config.getoption("--dtype"),
                 config.getoption("--device"), config.getoption("--compute-dtype"),
                 config.getoption("--impl-timeout"), text,
                 config.getoption("--hyper-dtype")
                 or declared_hyper(adapter, config.getoption("--dtype")))
    config.stash[_CONFIG] = cfg
    return cfg


def _fixed_variant(model: Model, adapter: object) -> Model:
    """The spec variant an option fixed on in --impl selects ('torch.optim.AdamW(amsgrad=True)'
    runs AMSGrad in every test, so every test judges AMSGrad), as `variants.variant_config`
    selects it for a drawn option."""
    from adamw_conformance.core import rules

    fixed = getattr(adapter, "fixed", None) or {}
    if (fixed.get("amsgrad") is True and model.rule_name in rules.ADAM_FAMILY
            and model.convention.amsgrad == "none"):
        model = replace(model, convention=replace(model.convention, amsgrad="raw_max"))
    if fixed.get("maximize") is True:
        model = replace(model, maximize=True)
    return model


def _auto_conventions(config: pytest.Config, adapter: object, rule: str,
                      text: str) -> tuple[Convention, str, str | None]:
    """--conventions=auto: the conventions the fingerprint finds from the target's behaviour
    (conformance/tools/fingerprint.py), and the header's note of what it found. The conventions are
    the Adam family's: another rule has none, and a target the fingerprint cannot place in the
    family (or cannot drive) is judged with the defaults, its verdict in the header. The third
    value is the spec rule the behaviour shows, where the fingerprint names one."""
    from adamw_conformance.core import rules
    from adamw_conformance.spec.conventions import Convention

    if rule not in rules.ADAM_FAMILY:
        return Convention(), f"rule {rule} has no conventions: default", None
    from adamw_conformance.tools.fingerprint import fingerprint
    try:
        fp = fingerprint(adapter, config.getoption("--dtype"), config.getoption("--device"),
                         config.getoption("--impl-timeout"), text)
    except Exception as e:  # noqa: BLE001 - the run goes on with the defaults, saying why
        return Convention(), f"the fingerprint failed ({type(e).__name__}: {e}): default", None
    shown = fp.spec_rule()
    convention = fp.convention() if shown in rules.ADAM_FAMILY else Convention()
    return convention, f"fingerprint: {fp.verdict().text}", shown


@pytest.hookimpl(tryfirst=True)  # before Hypothesis' plugin loads --hypothesis-profile
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "catalogue(id): the catalogue family this module checks")
    if not active(config):
        return
    settings.load_profile(os.environ.get("CONFORMANCE_PROFILE", "dev"))
    _config(config)
    if config.getoption("--report"):
        _start_report(config)


def _start_report(config: pytest.Config) -> None:
    from adamw_conformance.report.writer import ReportPlugin

    name = config.getoption("--report")
    if name in (".", "..") or "/" in name or "\\" in name:
        raise pytest.UsageError(f"--report={name!r}: a report name is one folder name, "
                                "e.g. torch-loop-float32 (set --report-dir for where)")
    if config.getoption("numprocesses", None):
        raise pytest.UsageError("--report records every verdict in one process: run it "
                                "without -n (pytest-xdist)")
    where = config.getoption("--report-dir")
    directory = Path(where) if where else config.invocation_params.dir / "reports"
    config.pluginmanager.register(
        ReportPlugin(config, name, directory, catalogue_id, lambda: _config(config)),
        "conformance-report")


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not active(config):
        return []
    cfg = _config(config)
    profile = settings._current_profile  # noqa: SLF001 - the name is only shown
    seed = config.getoption("hypothesis_seed", None)
    return [
        f"conformance: impl={cfg.adapter.name} version={cfg.adapter.version}",
        f"conformance: device={cfg.device} dtype={cfg.dtype} precision={cfg.precision().label()}",
        f"conformance: rule={cfg.model.rule.name} conventions={cfg.model.convention.label()}"
        + (f" (auto; {config.stash.get(_AUTO_NOTE, '')})"
           if config.getoption("--conventions").strip() == "auto" else ""),
        f"conformance: hypothesis profile={profile} seed="
        + (str(seed) if seed is not None
           else "derandomized" if settings().derandomize else "random"),
    ]


def catalogue_id(item: pytest.Item) -> str:
    """'exact.one_step' for conformance/test_exact.py::test_one_step[...]."""
    module = Path(str(item.fspath)).stem.removeprefix("test_")
    name = item.originalname if hasattr(item, "originalname") else item.name
    return f"{module}.{name.removeprefix('test_')}"


def _read_xfails(path: str) -> list[str]:
    entries = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line)
    return entries


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not active(config):
        return
    from adamw_conformance.core import rules

    cfg = _config(config)
    if cfg.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="--device=cuda but no CUDA device is available here")
            for item in items:
                item.add_marker(skip)
    for item in items:
        reason = rules.not_applicable(catalogue_id(item), cfg.model.rule_name)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
    path = config.getoption("--xfails")
    if not path:
        return
    entries = _read_xfails(path)
    used = set()
    for item in items:
        keys = {item.nodeid, item.name, catalogue_id(item)}
        for entry in entries:
            if entry in keys or item.nodeid.endswith(entry):
                item.add_marker(pytest.mark.xfail(reason=f"listed in {path}", strict=False))
                used.add(entry)
    for entry in entries:
        if entry not in used:
            warnings.warn(f"--xfails {path}: entry {entry!r} matches no test", stacklevel=1)


@pytest.fixture(scope="session")
def cfg(request: pytest.FixtureRequest) -> Config:
    return _config(request.config)


@pytest.fixture
def param_group_audit() -> Callable[..., GroupAudit]:
    """`param_group_audit(model, optimizer, **options)`: audit the optimizer's parameter groups
    (options as for `adamw_conformance.param_groups.audit_param_groups`) and fail the test with
    the readable report if a no-decay parameter is decayed or a parameter is in no group. Returns
    the GroupAudit when it passes."""
    from adamw_conformance.param_groups import audit_param_groups

    def audit(model: Any, optimizer: Any, **options: Any) -> GroupAudit:
        result = audit_param_groups(model, optimizer, **options)
        if not result.ok:
            pytest.fail(result.report(), pytrace=False)
        return result

    return audit
