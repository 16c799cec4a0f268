"""`--report=NAME`: the audit report a conformance run writes (writer) and its files (render)."""
