"""The lineage of update rules, each written once. See `spec.registry` for lookup by name."""
