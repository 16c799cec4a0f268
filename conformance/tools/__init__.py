"""Command-line tools: `python -m adamw_conformance.tools.<name>` (fingerprint, audit, bench,
detection, survey)."""
