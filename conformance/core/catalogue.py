"""Catalogue ids: property `<family>.<name>` is the test `test_<name>` of the module
`conformance/test_<family>.py`, which is marked `pytest.mark.catalogue("<family>")`."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest


def of(test: pytest.Item | str) -> str:
    """The catalogue id of a collected test (from its module's `catalogue` marker) or of a node
    id: 'exact.one_step' for conformance/test_exact.py::test_one_step[plain]."""
    if isinstance(test, str):
        path, _, name = test.partition("::")
        family = PurePosixPath(path).stem.removeprefix("test_")
    else:
        marker = test.get_closest_marker("catalogue")
        family = (marker.args[0] if marker is not None and marker.args
                  else test.path.stem.removeprefix("test_"))
        name = test.originalname if isinstance(test, pytest.Function) else test.name
    return f"{family}.{name.split('[')[0].removeprefix('test_')}"


def node(catalogue_id: str) -> str:
    """The node id of a property's test, from the repository root: 'bias.step_one' ->
    'conformance/test_bias.py::test_step_one'."""
    family, _, name = catalogue_id.partition(".")
    return f"conformance/test_{family}.py::test_{name}"


def pyargs(catalogue_id: str) -> str:
    """The `pytest --pyargs` form of a property (or a family): 'bias.step_one' ->
    'adamw_conformance.test_bias::test_step_one' (every parametrization)."""
    family, _, name = catalogue_id.partition(".")
    module = f"adamw_conformance.test_{family}"
    return f"{module}::test_{name}" if name else module
