"""The conformance suite: `pytest conformance --impl=...`."""
