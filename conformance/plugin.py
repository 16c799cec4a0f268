"""The pytest plugin of the conformance suite: options, profiles, header, xfails, fixtures.

Registered through the `pytest11` entry point, so it is loaded in every pytest session of an
environment that installs the package. It stays inert (its options registered, nothing imported
beyond pytest and Hypothesis, no target resolved) unless the session runs the suite: a collected
path inside this package (`pytest --pyargs adamw_conformance`, or the path of its folder) or an
explicit `--impl`. The session's state lives in `config.stash`.

In a session that runs the suite, every bad option is a usage error (`core.session`), the header
says what the run is judged under and with which seed, a failure shows its message and its
example without pytest's or Hypothesis' dumps, and a failing run ends with its root cause
(`report.summary`).

It also defines the `param_group_audit` fixture for any project that installs the package:

    def test_optimizer_setup(param_group_audit):
        model = build_model()
        param_group_audit(model, build_optimizer(model))
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# pytest reads the hook from this module: re-exported, not called here.
from adamw_conformance.options import DEFAULT_IMPL, pytest_addoption  # noqa: F401
from hypothesis import settings

if TYPE_CHECKING:  # the suite's modules import torch and SymPy: only when the suite runs
    from adamw_conformance.core.config import Config
    from adamw_conformance.param_groups import GroupAudit
    from adamw_conformance.spec.conventions import Convention

PACKAGE_DIR = Path(__file__).resolve().parent
_CONFIG = pytest.StashKey["Config"]()
_SESSION = pytest.StashKey["SessionPlugin"]()


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
    """The run's Config, resolved once from the options; every bad option a usage error."""
    cached = config.stash.get(_CONFIG, None)
    if cached is not None:
        return cached
    from adamw_conformance.adapters.base import declared_hyper
    from adamw_conformance.core import rules, variants
    from adamw_conformance.core.config import Config
    from adamw_conformance.core.judge import Model
    from adamw_conformance.core.session import (
        WORKER_KEY,
        OptionError,
        check_device,
        choose_rule,
        lazy,
        parse_conventions,
        read_xfails,
        xfails_file,
    )
    from adamw_conformance.core.targets import TargetError, capabilities, resolve

    plugin = config.stash[_SESSION]
    session = plugin.session
    text = session.impl
    given = getattr(config, "workerinput", {}).get(WORKER_KEY)  # decided by the controller
    try:
        if session.timeout <= 0:
            raise OptionError(f"--impl-timeout={session.timeout:g}: give a positive number of "
                              "seconds")
        check_device(session.device)
        if session.xfails:
            plugin.xfails = read_xfails(xfails_file(session.xfails,
                                                    config.invocation_params.dir),
                                        session.xfails)
        adapter = resolve(text, config.invocation_params.dir, session.world_size)
        caps = capabilities(adapter)
        probe = lazy(lambda: _fingerprint(adapter, session.dtype, session.device,
                                          session.timeout, text))
        plugin.fingerprint = probe
        conventions = config.getoption("--conventions").strip()
        rule_option = config.getoption("--rule")
        if given is not None:
            rule, session.rule_how = given["rule"], given["rule_how"]
            convention = parse_conventions(given["conventions"])
            session.conventions_auto = given["conventions_auto"]
        else:
            rule, session.rule_how = choose_rule(rule_option, adapter, caps, probe)
            if conventions == "auto":
                convention, session.conventions_auto, shown = _auto_conventions(probe, rule)
                if shown and rule_option == rules.AUTO and not rules.declared(caps):
                    # Nothing names the target's rule: judge the one its behaviour shows
                    # (optax.adam is Adam without decay, optax.sgd is SGD), not AdamW by default.
                    session.rule_how = ("auto: default; the target names no rule; its "
                                        "behaviour agrees" if shown == rule else
                                        "auto: behaviour (--conventions=auto's fingerprint); "
                                        "the target names no rule")
                    rule = shown
            else:
                convention = parse_conventions(conventions)
        session.rule, session.conventions = rule, convention.label()
        # An option fixed on in --impl ('torch.optim.AdamW(amsgrad=True)') is on in every test,
        # so every test judges its spec variant, as a test's variant selects it.
        model = variants.selected(Model(rule, convention, declared_orders=caps.orders),
                                  caps.fixed)
        model.rule  # noqa: B018 - conventions on a non-Adam rule are a usage error, said now
    except OptionError as e:
        raise pytest.UsageError(str(e)) from None
    except (TargetError, ValueError) as e:
        raise pytest.UsageError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - e.g. an adapter class whose constructor raises
        from adamw_conformance.core.calls import said
        raise pytest.UsageError(f"--impl={text!r}: setting up the target raised "
                                f"{type(e).__name__}: {said(e)}") from None
    cfg = Config(adapter, model, session.dtype, session.device, session.compute_dtype,
                 session.timeout, text,
                 config.getoption("--hyper-dtype") or declared_hyper(caps, session.dtype))
    config.stash[_CONFIG] = cfg
    return cfg


def _fingerprint(adapter: object, dtype: str, device: str, timeout: float, text: str) -> Any:
    from adamw_conformance.tools.fingerprint import fingerprint

    return fingerprint(adapter, dtype, device, timeout, text)


def _auto_conventions(probe: Callable[[], Any], rule: str) -> tuple[Convention, str, str | None]:
    """--conventions=auto: the conventions the fingerprint (`probe()`) finds from the target's
    behaviour, and the header's note of what it found. The conventions are the Adam family's:
    another rule has none, and a target the fingerprint cannot place in the family (or cannot
    drive) is judged with the defaults, its verdict in the header. The third value is the spec
    rule the behaviour shows, where the fingerprint names one."""
    from adamw_conformance.core import rules
    from adamw_conformance.spec.conventions import Convention

    if rule not in rules.ADAM_FAMILY:
        return Convention(), f"rule {rule} has no conventions: default", None
    try:
        fp = probe()
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
    from adamw_conformance.core.session import OptionError

    try:
        plugin = SessionPlugin(config)
    except OptionError as e:
        raise pytest.UsageError(str(e)) from None
    config.stash[_SESSION] = plugin
    config.pluginmanager.register(plugin, "adamw-conformance-session")
    cfg = _config(config)
    from adamw_conformance.core import context, session

    session.start(plugin.session)
    # Strategies and verdicts read the run's context; pytest_unconfigure ends it.
    plugin.context = context.begin(cfg.model.rule_name, cfg.caps.pinned)
    if config.getoption("--report"):
        _start_report(config)


class SessionPlugin:
    """The session's state and its per-test hooks: short failures, the failures collected for
    the root-cause summary, and that summary at the end."""

    def __init__(self, config: pytest.Config) -> None:
        from adamw_conformance.core.session import (
            WORKER_KEY,
            Session,
            check_profile,
            check_world_size,
            choose_seed,
            environment_profile,
        )
        from adamw_conformance.report.summary import Findings

        self.config = config
        default = environment_profile()
        check_profile(default, "CONFORMANCE_PROFILE")
        settings.load_profile(default)
        from adamw_conformance.core import draws

        draws.take_no_local_constants()
        profile = config.getoption("--hypothesis-profile", None) or default
        derandomized = check_profile(profile).derandomize
        given = config.getoption("--hypothesis-seed", None)
        worker = getattr(config, "workerinput", {}).get(WORKER_KEY)
        seed = choose_seed(given, derandomized, worker)
        self.chose_seed = seed is not None and given is None
        #: a seed given to a derandomized profile, which ignores it: the header says so
        self.ignored_seed = given if derandomized else None
        if self.chose_seed:
            config.option.hypothesis_seed = seed  # Hypothesis' plugin reads it after this hook
        impl = config.getoption("--impl") or DEFAULT_IMPL
        self.session = Session(
            impl=impl, world_size=check_world_size(config.getoption("--world-size"), impl),
            dtype=config.getoption("--dtype"), device=config.getoption("--device"),
            compute_dtype=config.getoption("--compute-dtype"),
            hyper_dtype=config.getoption("--hyper-dtype"), orders=config.getoption("--orders"),
            xfails=config.getoption("--xfails"), profile=profile, seed=seed,
            timeout=config.getoption("--impl-timeout"))
        self.xfails: list[str] = []
        self.findings = Findings()
        self.fingerprint: Callable[[], Any] | None = None
        self.context: Any = None  # core.context's record of this run, begun once configured

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Leave no seed or session behind for a later session in this process (tests that
        run the suite in-process)."""
        from adamw_conformance.core import context, session

        session.start(None)
        if "adamw_conformance.sharded.pool" in sys.modules:
            # one pool of workers per suite run: taken down with it
            sys.modules["adamw_conformance.sharded.pool"].end_of_run()
        if self.context is not None:
            context.end(self.context)
        if self.chose_seed:
            from hypothesis import core

            core.global_force_seed = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """pytest-xdist: every worker judges under the controller's seed, rule and conventions
        (the fingerprint that chose them runs once)."""
        from adamw_conformance.core.session import WORKER_KEY

        node.workerinput[WORKER_KEY] = self.session.for_workers()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        """Hypothesis keys a parametrized test's examples (its derandomized seed among them) by
        the pytest node id, which depends on how and from where the test was addressed (a path
        from the rootdir, `--pyargs` of the package or of one module): a property's reproduce
        line would draw other examples than the run it reproduces. The suite's tests are keyed
        the same wherever they run: by the node id a run from the repository's root gives them
        (`conformance/test_bias.py::test_counter[late-start]`), the examples the project's own
        tests and committed audits were judged on. (Hypothesis' own hook, a wrapper, has set its
        key by now; the test runs after this.)"""
        inner = getattr(getattr(getattr(item, "obj", None), "hypothesis", None), "inner_test",
                        None)
        if inner is not None and hasattr(inner, "_hypothesis_internal_add_digest") \
                and _in_suite(Path(str(item.fspath))):
            name = Path(str(item.fspath)).name
            inner._hypothesis_internal_add_digest = f"conformance/{name}::{item.name}".encode()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        from adamw_conformance.report.summary import short_repr, shorten, shortens

        excinfo = call.excinfo
        short = (excinfo is not None and call.when == "call" and shortens(item.config)
                 and _in_suite(Path(str(item.fspath)))
                 and not excinfo.errisinstance(pytest.skip.Exception))
        if short:
            shorten(excinfo.value)
        outcome = yield
        rep = outcome.get_result()
        if short and rep.failed:
            rep.longrepr = short_repr(item, excinfo)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from adamw_conformance.core import catalogue
        from adamw_conformance.report.summary import message_of

        if not report.failed or not self._in_suite(report.location[0]):
            return
        self.findings.add(catalogue.of(report.nodeid), report.nodeid,
                          message_of(report.longreprtext))

    def _in_suite(self, location: str) -> bool:
        return _in_suite(Path(self.config.rootpath, location))

    def command(self, rule: str, conventions: str) -> str:
        options = replace(self.session, rule=rule, conventions=conventions).options()
        return " ".join(["pytest", "--pyargs", "adamw_conformance", *options])

    def root_cause(self) -> list[str]:
        """The root-cause summary (empty when nothing failed); the fingerprint runs only here,
        or reuses the one the options needed."""
        from adamw_conformance.report.summary import root_cause

        if self.config.getoption("--no-root-cause"):
            return []
        return root_cause(self.findings, self.fingerprint, self.session.rule,
                          self.session.conventions, self.command)

    def judged_under(self) -> list[str]:
        """What a green run must not hide: non-default conventions --conventions=auto chose,
        and a rule chosen from behaviour rather than from what the target is."""
        from adamw_conformance.report import summary

        s, lines = self.session, []
        if s.conventions_auto is not None and s.conventions != "default":
            name = {"adamw": "AdamW", "adam": "Adam", "adam_l2": "Adam with L2 decay"}.get(
                s.rule, s.rule)
            lines.append(f"judged under non-default conventions (found by --conventions=auto): "
                         f"{summary.explain(s.conventions)}; this is not {name} as PyTorch "
                         "defines it (run without --conventions=auto to require that)")
        if s.rule_how.startswith("auto: behaviour"):
            lines.append(f"judged as rule {s.rule}, the rule its behaviour shows ({s.rule_how})")
        return lines

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from adamw_conformance.report import summary

        lines = self.root_cause()
        if lines:
            terminalreporter.section("conformance: root cause", sep="=", red=True, bold=True)
            for line in lines:
                terminalreporter.write_line(line)
        for line in self.judged_under():
            terminalreporter.write_line(f"conformance: {line}", yellow=True)
        for line in summary.harness_notes(_config(self.config)):
            terminalreporter.write_line(f"conformance: {line}")


def _in_suite(path: Path) -> bool:
    path = path.resolve()
    return path == PACKAGE_DIR or PACKAGE_DIR in path.parents


def _start_report(config: pytest.Config) -> None:
    from adamw_conformance.core.session import OptionError, check_report_dir
    from adamw_conformance.report.writer import ReportPlugin

    name = config.getoption("--report")
    if name in (".", "..") or "/" in name or "\\" in name:
        raise pytest.UsageError(f"--report={name!r}: a report name is one folder name, "
                                "e.g. torch-loop-float32 (set --report-dir for where)")
    if config.getoption("numprocesses", None):
        raise pytest.UsageError("--report records every verdict in one process: run it "
                                "without -n (pytest-xdist)")
    where = config.getoption("--report-dir")
    try:
        directory = check_report_dir(Path(config.invocation_params.dir, where) if where
                                     else config.invocation_params.dir / "reports")
    except OptionError as e:
        raise pytest.UsageError(str(e)) from None
    plugin = config.stash[_SESSION]
    report = ReportPlugin(config, name, directory, lambda: _config(config))
    report.fingerprinter = lambda *args, **kwargs: plugin.fingerprint()
    report.root_cause = plugin.root_cause
    report.judged_under = plugin.judged_under
    config.pluginmanager.register(report, "conformance-report")


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not active(config):
        return []
    cfg = _config(config)
    s = config.stash[_SESSION].session
    lines = [
        f"conformance: impl={cfg.adapter.name} version={cfg.adapter.version}",
        f"conformance: device={cfg.device} dtype={cfg.dtype} precision={cfg.precision().label()}",
        f"conformance: rule={cfg.model.rule_name} ({s.rule_how})",
        f"conformance: conventions={cfg.model.convention.label()}"
        + (f" (auto; {s.conventions_auto})" if s.conventions_auto is not None else ""),
    ]
    lines.append(f"conformance: state={_state_line(cfg)}")
    lines.append(f"conformance: orders={_orders_line(config, cfg)}")
    lines += [f"conformance: {line}" for line in config.stash[_SESSION].judged_under()]
    ignored = config.stash[_SESSION].ignored_seed
    lines.append(f"conformance: hypothesis profile={s.profile} seed={s.seed_text()}"
                 + (f" (--hypothesis-seed={ignored} has no effect: profile {s.profile} is "
                    "derandomized)" if ignored is not None else ""))
    return lines


def _state_line(cfg: Config) -> str:
    """How the target stores its state (core/layout.py), found before any test runs."""
    from adamw_conformance.core import replay

    try:
        return replay.describe(cfg)
    except Exception as e:  # noqa: BLE001 - a target's failure is the tests' to report
        return f"not determined ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def _orders_line(config: pytest.Config, cfg: Config) -> str:
    """The orders the run judges by, narrowed from behaviour (core/forms.py) before any test."""
    from adamw_conformance.core import forms

    try:
        forms.settle(cfg, config.getoption("--orders") == "auto")
    except Exception as e:  # noqa: BLE001 - a target's failure is the tests' to report
        forms.settle(cfg, False)
        return (f"every order (the probe raised {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''})")
    return forms.describe(cfg)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not active(config):
        return
    from adamw_conformance.core import catalogue, rules

    cfg = _config(config)
    from adamw_conformance.core import draws

    draws.use_this_runs_profile([i for i in items if _in_suite(Path(str(i.fspath)))])
    if cfg.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason=f"--device={cfg.device} but no CUDA device is "
                                           "available here")
            for item in items:
                item.add_marker(skip)
    for item in items:
        reason = rules.not_applicable(catalogue.of(item), cfg.model.rule_name)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
    path = config.getoption("--xfails")
    if not path:
        return
    entries = config.stash[_SESSION].xfails
    used = set()
    for item in items:
        keys = {item.nodeid, item.name, catalogue.of(item)}
        for entry in entries:
            if entry in keys or item.nodeid.endswith(entry):
                item.add_marker(pytest.mark.xfail(reason=f"listed in {path}", strict=False))
                used.add(entry)
    for entry in entries:
        if entry not in used:
            warnings.warn(f"--xfails {path}: entry {entry!r} matches no test", stacklevel=1)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Find the target's state layout (core/layout.py) and the orders its behaviour leaves
    (core/forms.py) before the first test: every test judges by those orders, and the probes'
    one-time costs would otherwise fall inside a test's first example, and Hypothesis' choice
    of the next examples depends on how long that took."""
    if active(session.config) and session.items and not session.config.option.collectonly:
        _state_line(_config(session.config))
        _orders_line(session.config, _config(session.config))


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
