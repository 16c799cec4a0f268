"""The suite's command-line options and Hypothesis profiles.

Imported by the plugin in every pytest session (the options are registered even where the suite
does not run), so it imports nothing beyond pytest and Hypothesis.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings

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
                    help="implementation under test: dotted path (pkg.mod.Attr or pkg.mod:Attr, "
                         "importable from the current directory) to an Optimizer subclass, "
                         "functional kernel or adapter, optionally with fixed keywords "
                         "'Path(foreach=True)'; or torch-loop, torch-foreach, torch-fused, "
                         "torch-fused-kernel (default: torch.optim.AdamW)")
    group.addoption("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    group.addoption("--dtype", default="float32", choices=DTYPES,
                    help="parameter dtype (default float32)")
    group.addoption("--compute-dtype", default=None, choices=DTYPES,
                    help="the dtype the implementation declares it computes in "
                         "(default: float32 for bf16/fp16 parameters, else the dtype)")
    group.addoption("--no-root-cause", action="store_true", default=False,
                    help="end a failing run without the root-cause summary (it runs the "
                         "convention fingerprint, a few seconds)")
    group.addoption("--hyper-dtype", default=None, choices=("float32", "bfloat16", "float16"),
                    help="the dtype the implementation declares it takes its hyperparameters "
                         "and their arithmetic in (1 - beta2, lr * weight_decay, beta^t), as a C "
                         "float kernel does with float32 (default: exact, Python floats and "
                         "double arithmetic; see docs/tolerance-model.md)")
    group.addoption("--orders", default="auto", choices=("auto", "all"),
                    help="the evaluation orders the bound takes the maximum over: auto (default: "
                         "those the target's behaviour does not rule out, probed once per run; "
                         "the header says which) or all (every order, whatever the target does; "
                         "see docs/tolerance-model.md)")
    group.addoption("--conventions", default="default",
                    help="AdamW conventions the implementation claims, e.g. 'eps=hat' or "
                         "'decay_coupling=independent,counter=group' (see README), or 'auto': "
                         "the ones the fingerprint (adamw-fingerprint) finds")
    group.addoption("--xfails", default=None,
                    help="file of test ids or catalogue ids expected to fail, one per line, "
                         "# comments allowed; or the key of a list that ships with the package: "
                         "keras, torch-float64, torch-sgd")
    group.addoption("--world-size", default=None,
                    help="the ranks (processes) a sharded target runs on, --impl=zero:... or "
                         "fsdp2:... (default 2)")
    group.addoption("--impl-timeout", type=float, default=60.0,
                    help="seconds one call into the implementation may take (default 60)")
    group.addoption("--report", default=None, metavar="NAME",
                    help="after the run, write an audit report to REPORT_DIR/NAME/ (report.md, "
                         "report.json, report.html, plots/)")
    group.addoption("--report-dir", default=None,
                    help="where --report writes (default: reports/ in the current directory)")
    group.addoption("--rule", default="auto",
                    help="the spec rule to judge against: auto (default: what the target is, "
                         "e.g. torch.optim.SGD -> sgd, Adam -> adam_l2, else adamw; a subclass "
                         "whose behaviour shows another rule is judged as that one) or a rule "
                         "name: sgd, momentum, nesterov, adagrad, rmsprop, adam, adam_l2, adamw, "
                         "... (see README)")
