"""The judging core: targets, strategies, driving an implementation, verdicts, records."""
