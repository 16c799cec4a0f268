"""`adamw-conformance [pytest options]` (or `python -m adamw_conformance ...`): the whole
catalogue, as `pytest --pyargs adamw_conformance [pytest options]`.

Every option passes through to pytest: the suite's own (`--impl=myopt:MyAdamW`, `--xfails=keras`,
...), pytest's (`-k`, `-x`, `--junitxml`, `-n 2` with pytest-xdist) and Hypothesis'
(`--hypothesis-profile=ci`). The target is imported from the current directory. A selection of
the catalogue (`adamw_conformance.test_bias` or `adamw_conformance.test_bias::test_step_one`)
replaces the whole of it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

PACKAGE = "adamw_conformance"


def main(argv: Sequence[str] | None = None) -> int:
    import pytest

    args = list(sys.argv[1:] if argv is None else argv)
    selected = any(a == PACKAGE or a.startswith((f"{PACKAGE}.", f"{PACKAGE}::")) for a in args)
    # -p: the plugin is registered even where PYTEST_DISABLE_PLUGIN_AUTOLOAD turns entry points
    # off (its entry point has the module's name, so it is never registered twice).
    return int(pytest.main(["-p", f"{PACKAGE}.plugin", "--pyargs",
                            *([] if selected else [PACKAGE]), *args]))


if __name__ == "__main__":
    sys.exit(main())
