"""Test material for the sharded engines (`--impl=zero:...`, `fsdp2:...`): optimizers whose
rank misbehaves (`failing`), and sharded mutants of the kinds that shipped (`mutants`)."""
