"""`--report=NAME`: what a conformance run found, written to reports/NAME/ after the session.

The plugin below collects each test's outcome (and the first line of its failure), the err/bound
of every verdict (through `adamw_conformance.core.record`) and the implementation's fingerprint,
and hands them to `adamw_conformance.report.render` for report.json, report.md and report.html.
The JSON's `results`
hold only what the run found, so that regenerating a report gives a minimal diff; the date, the
command line and the versions of the environment are under `metadata`.
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from adamw_conformance.core import calls, catalogue, record

SCHEMA_VERSION = 1
# Outcomes of one test, worst first: a property's outcome is the worst of its tests'.
OUTCOMES = ("error", "failed", "xpassed", "xfailed", "passed", "skipped")
VERSIONED = ("python", "torch", "numpy", "jax", "optax", "keras", "hypothesis", "mpmath",
             "sympy", "matplotlib")
DETAIL_CHARS = 4000


def _round(x: float) -> float | str | None:
    """4 significant digits (stable across platforms); 'inf' for an infinite ratio."""
    if x is None or np.isnan(x):
        return None
    if np.isinf(x):
        return "inf"
    return float(f"{x:.4g}")


def ratio_stats(ratios: np.ndarray) -> dict[str, Any]:
    """Summary of one output's err/bound samples (nan = element not judged by the bound)."""
    judged = ratios[~np.isnan(ratios)]
    if not judged.size:
        return {"elements": 0, "exact": 0, "over_bound": 0, "worst": None, "median": None,
                "p99": None}
    return {
        "elements": int(judged.size),
        "exact": int(np.count_nonzero(judged == 0)),
        "over_bound": int(np.count_nonzero(judged > 1)),
        "worst": _round(float(judged.max())),
        "median": _round(float(np.quantile(judged, 0.5))),
        "p99": _round(float(np.quantile(judged, 0.99))),
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED[1:]:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _leaf(exc: BaseException) -> BaseException:
    """Hypothesis raises a group when several distinct failures were found: show the first."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def fingerprint_section(adapter: Any, dtype: str, device: str, timeout: float,
                        fingerprinter: Callable[..., Any] | None = None) -> dict[str, Any]:
    """The implementation's fingerprint (which named conventions it follows), or a note that
    says why there is none: a report is written whatever the fingerprint does."""
    if fingerprinter is None:
        try:
            from adamw_conformance.tools.fingerprint import fingerprint as fingerprinter
        except ImportError as e:
            return {"available": False,
                    "note": "fingerprint not available: adamw_conformance.tools.fingerprint "
                             f"cannot be "
                            f"imported ({e})"}
    try:
        fp = fingerprinter(adapter, dtype=dtype, device=device, timeout=timeout)
        return {"available": True, "note": None, "answers": fp.as_dict(),
                "table": fp.table(), "conventions": fp.conventions_text()}
    except Exception as e:  # noqa: BLE001 - a failing fingerprint is reported, not raised
        return {"available": False,
                "note": f"fingerprint failed: {type(e).__name__}: {first_line(str(e))}"}


def _state(cfg: Any) -> str:
    """How the target stores its state and whether replay went through it (core/layout.py)."""
    from adamw_conformance.core import replay

    try:
        return replay.describe(cfg)
    except Exception as e:  # noqa: BLE001 - the report is written whatever the target does
        return f"not determined ({type(e).__name__})"


def _orders(cfg: Any) -> str:
    """The orders the verdicts took the maximum over, and how the run chose them (core/forms.py)."""
    from adamw_conformance.core import forms

    try:
        return forms.describe(cfg, evidence=True)
    except Exception as e:  # noqa: BLE001 - the report is written whatever the target does
        return f"not determined ({type(e).__name__})"


class ReportPlugin:
    """Registered by the conformance plugin when --report is given."""

    def __init__(self, config: pytest.Config, name: str, directory: Path,
                 target: Callable[[], Any]) -> None:
        self.config = config
        self.out = directory / name
        self.name = name
        self.target = target  # the run's conformance Config, resolved by the plugin
        self.tests: dict[str, dict[str, Any]] = {}
        self.recorder = record.start()
        self.started = time.time()
        # Set by the conformance plugin: the run's fingerprint (computed once, shared with the
        # root-cause summary), the root-cause summary and what the run was judged under.
        self.fingerprinter: Callable[..., Any] | None = None
        self.root_cause: Callable[[], list[str]] = list
        self.judged_under: Callable[[], list[str]] = list

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        with record.current(catalogue.of(item)):
            yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        rep = outcome.get_result()
        entry = self.tests.setdefault(rep.nodeid, {
            "id": rep.nodeid, "catalogue": catalogue.of(item), "outcome": None,
            "message": None, "detail": None})
        if call.excinfo is not None and not call.excinfo.errisinstance(pytest.skip.Exception):
            exc = _leaf(call.excinfo.value)
            text = str(exc) or call.excinfo.exconly()
            entry["message"] = first_line(text) or type(exc).__name__
            entry["detail"] = text[:DETAIL_CHARS]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.tests.get(report.nodeid)
        if entry is None:
            return
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
            entry["reason"] = report.wasxfail
        elif report.skipped:
            outcome = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            entry["message"] = str(reason).removeprefix("Skipped: ")
        elif report.failed:
            outcome = "failed" if report.when == "call" else "error"
        elif report.when == "call":
            outcome = "passed"
            # what a passing property measured (dtype.precision's compute, the pairs' precision
            # of dtype.compensation): its record_property lines
            if report.user_properties:
                entry["message"] = "; ".join(f"{k}: {v}" for k, v in report.user_properties)
        else:
            return
        # the worst phase wins: a teardown error after a passed call is still an error
        if entry["outcome"] is None or OUTCOMES.index(outcome) < OUTCOMES.index(entry["outcome"]):
            entry["outcome"] = outcome

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        try:
            self.write()
        finally:
            record.stop()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_line(f"conformance: report written to {self.out}")

    def results(self) -> dict[str, Any]:
        from hypothesis import settings

        cfg = self.target()
        seed = self.config.getoption("hypothesis_seed", None)
        profile = settings._current_profile  # noqa: SLF001 - the name is only shown
        tests = sorted(self.tests.values(), key=lambda t: t["id"])
        for t in tests:  # a test that reported no phase at all (interrupted) did not run clean
            t["outcome"] = t["outcome"] or "error"
        properties: dict[str, dict[str, Any]] = {}
        for t in tests:
            prop = properties.setdefault(t["catalogue"], {"tests": {}, "outputs": {}})
            prop["tests"][t["outcome"]] = prop["tests"].get(t["outcome"], 0) + 1
        for cid, prop in properties.items():
            prop["outcome"] = next(o for o in OUTCOMES if o in prop["tests"])
            for output in self.recorder.outputs(cid):
                prop["outputs"][output] = ratio_stats(self.recorder.ratios(cid, output))
            worst = [s["worst"] for s in prop["outputs"].values() if s["worst"] is not None]
            prop["worst"] = ("inf" if "inf" in worst else max(worst)) if worst else None
            prop["elements"] = sum(s["elements"] for s in prop["outputs"].values())
        summary = {o: sum(1 for t in tests if t["outcome"] == o) for o in OUTCOMES}
        return {
            "target": {
                "impl": cfg.impl_text, "name": cfg.adapter.name,
                "version": str(cfg.adapter.version), "device": cfg.device, "dtype": cfg.dtype,
                "precision": cfg.precision().label(), "rule": cfg.model.rule.name,
                "conventions": cfg.model.convention.label(),
                "state": _state(cfg),
                "orders": _orders(cfg),
            },
            "settings": {
                "hypothesis_profile": profile,
                # a derandomized profile ignores any seed
                "hypothesis_seed": ("derandomized" if settings().derandomize else
                                    str(seed) if seed is not None else "random"),
                "compute_dtype": self.config.getoption("--compute-dtype"),
                "xfails": self.config.getoption("--xfails"),
                "impl_timeout": cfg.timeout,
                # the harness's own findings (core.calls): one-time cost, refused options
                "warm_up_seconds": _warm_up_seconds(cfg),
                "refused_options": calls.refusals(cfg),
            },
            "summary": summary,
            "elements_judged": sum(p["elements"] for p in properties.values()),
            "properties": properties,
            "tests": tests,
            "fingerprint": fingerprint_section(cfg.adapter, cfg.dtype, cfg.device, cfg.timeout,
                                               self.fingerprinter),
            "root_cause": [*self.root_cause(), *self.judged_under()],
        }

    def write(self) -> Path:
        from adamw_conformance.report import render

        args = " ".join(self.config.invocation_params.args)
        meta = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": f"pytest {args}",
            "seconds": round(time.time() - self.started, 1),
            "versions": versions(),
            "platform": f"{platform.system()} {platform.machine()}",
            "executable": Path(sys.executable).name,
        }
        data = {"schema_version": SCHEMA_VERSION, "name": self.name, "metadata": meta,
                "results": self.results()}
        samples = {cid: {o: self.recorder.ratios(cid, o) for o in self.recorder.outputs(cid)}
                   for cid in data["results"]["properties"]}
        render.write_all(self.out, data, samples)
        return self.out


def _warm_up_seconds(cfg: Any) -> float | None:
    """How long the warm-up (the target's first creation and step) took; None if none ran."""
    warm = calls.warmed(cfg)
    return None if warm is None else round(warm.seconds, 3)
