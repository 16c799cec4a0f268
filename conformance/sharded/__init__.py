"""Sharded optimizers on torch.distributed (gloo, CPU): `--impl=zero:torch.optim.AdamW`,
`--impl=fsdp2:torch.optim.AdamW`, judged through the same adapter protocol as any target.

`pool` starts and supervises the worker processes (one per rank), `worker` is their main loop,
`engines` builds the sharded optimizer in them, `adapter` presents it to the suite.
"""
