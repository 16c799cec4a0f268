"""`python -m adamw_conformance.devicecheck`: see the package's docstring (or --help)."""

import sys

from adamw_conformance.devicecheck import main

sys.exit(main())
