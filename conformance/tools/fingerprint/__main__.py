"""`python -m adamw_conformance.tools.fingerprint`: see the package docstring."""

import sys

from adamw_conformance.tools.fingerprint.cli import main

sys.exit(main())
