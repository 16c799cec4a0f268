"""pytest plugin with the `param_group_audit` fixture, registered through the `pytest11` entry
point of adamw-conformance, so any project that installs the package can gate its optimizer setup:

    def test_optimizer_setup(param_group_audit):
        model = build_model()
        param_group_audit(model, build_optimizer(model))

Without the installed package: `pytest -p conformance.audit_plugin`, or
`pytest_plugins = ["conformance.audit_plugin"]` in the root conftest.py. The plugin only defines
the fixture (no options), and imports torch only when the fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conformance.param_groups import GroupAudit


@pytest.fixture
def param_group_audit() -> Callable[..., GroupAudit]:
    """`param_group_audit(model, optimizer, **options)`: audit the optimizer's parameter groups
    (options as for `conformance.param_groups.audit_param_groups`) and fail the test with the
    readable report if a no-decay parameter is decayed or a parameter is in no group. Returns the
    GroupAudit when it passes."""
    from conformance.param_groups import audit_param_groups

    def audit(model: Any, optimizer: Any, **options: Any) -> GroupAudit:
        result = audit_param_groups(model, optimizer, **options)
        if not result.ok:
            pytest.fail(result.report(), pytrace=False)
        return result

    return audit
