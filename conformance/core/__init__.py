"""The judging core: targets (what --impl is, and what it declares), config (what a run judges),
session (the run's state read at draw time), strategies, calls (guarded calls into the
implementation), replay (state replay), checks (one step against the oracle), trajectory (several
steps), bits (bitwise comparison), judge (verdicts), record, catalogue (property ids), rules,
variants, precision."""
