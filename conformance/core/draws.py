"""Hypothesis' draws made the same in every process: two of its process-wide habits that would
otherwise make a run's examples depend on what ran or was imported before it."""

from __future__ import annotations

import pytest
from hypothesis import settings


def use_this_runs_profile(items: list[pytest.Item]) -> None:
    """Hypothesis fixes a test's settings when its module is imported, and a module is imported
    once per process: a later run of the suite in the same process (the project's tests, a seed
    sweep) would keep the profile of the first. Each of the suite's tests (`items`) gets this
    run's."""
    current = settings.default
    for item in items:
        fn = getattr(item, "obj", None)
        if (getattr(fn, "is_hypothesis_test", False)
                and not getattr(fn, "_hypothesis_internal_settings_applied", False)):
            fn._hypothesis_internal_use_settings = current  # type: ignore[union-attr]


def take_no_local_constants() -> None:
    """Hypothesis (6.131+) mixes into its draws constants harvested from every local module
    imported so far, so a derandomized profile's examples would depend on what the process
    happened to import first: the fingerprint of a root-cause summary, a user's modules, an
    earlier run in the same process. The suite draws regimes and seeds, not constants: it takes
    none, so that `ci` draws the same examples in every process and the reproduce line holds."""
    try:
        from hypothesis.internal.conjecture import providers
        empty = type(providers._local_constants)(
            **{name: type(values)(key=getattr(values, "key", None))
               for name, values in vars(providers._local_constants).items()})
    except Exception:  # noqa: BLE001 - a Hypothesis without the feature, or a changed one
        return
    providers._get_local_constants = lambda: empty
