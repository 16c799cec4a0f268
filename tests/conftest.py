"""Settings of the project's own test session."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # About 25 tests run the suite in a fresh `python -m pytest` process, as a user would. Where
    # the environment turns bytecode writing off (PYTHONDONTWRITEBYTECODE, as some CI sandboxes
    # do), each of them compiles this package and has pytest rewrite Hypothesis' modules again:
    # ~2 s a process. Their processes may write bytecode like any Python a user runs (caches
    # in __pycache__, ignored by git); this process is unchanged.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
