"""The convention fingerprint: which named conventions of the spec (docs/conventions.md) an
implementation follows, and its effective precision for bf16/fp16 parameters, from behaviour alone.

Each answer comes from a designed probe (probes.py: the scenario, the candidates, the answers
it needs from earlier probes): exact inputs chosen so that the candidate conventions predict
results that differ by far more than the derived bound, stepped through the adapter protocol,
and judged against each candidate's oracle and bound (judges.py, precision.py). The candidate
whose err/bound is at most 1 while the others' are not is the answer; the err/bound of every
candidate is the evidence. Nothing reads the implementation's source, every call into it is
guarded, and whatever it does (raise, hang, return NaN, hide its state) becomes an answer,
never a crash (runner.py).

    adamw-fingerprint --impl=torch.optim.AdamW [--dtype=bfloat16] [--json]
    python -m adamw_conformance.tools.fingerprint --impl=...

Exit codes (verdict.py):

    0  AdamW as PyTorch defines it: decoupled weight decay, every convention PyTorch's
       (conventions: default; AMSGrad raw_max where the target takes it)
    1  driven, but not AdamW: Adam+L2, Adam without weight decay, another rule of the spec or
       none, or a property that fits no named convention (or could not be determined)
    2  usage error: the --impl cannot be resolved, or a bad --device, --dtype or --impl-timeout
    3  could not drive the target: it raises, hangs, or its params() gives no numbers
    4  AdamW under other named conventions: decoupled weight decay, every property named, some
       not PyTorch's (conventions: eps=hat, ..., or AMSGrad corrected_max)
"""

from adamw_conformance.tools.fingerprint.answers import (
    ADAM_FAMILY,
    NO_MATCH,
    NOT_ADAM,
    NOT_APPLICABLE,
    PROPERTIES,
    UNDETERMINED,
    WHAT,
    Answer,
)
from adamw_conformance.tools.fingerprint.cli import main
from adamw_conformance.tools.fingerprint.result import Fingerprint
from adamw_conformance.tools.fingerprint.runner import fingerprint
from adamw_conformance.tools.fingerprint.verdict import (
    EXIT_CODES,
    EXIT_CONVENTIONS,
    EXIT_NOT_ADAMW,
    EXIT_PYTORCH,
    EXIT_UNDRIVEN,
    EXIT_USAGE,
    Verdict,
)

__all__ = [
    "ADAM_FAMILY", "EXIT_CODES", "EXIT_CONVENTIONS", "EXIT_NOT_ADAMW", "EXIT_PYTORCH",
    "EXIT_UNDRIVEN", "EXIT_USAGE", "NOT_ADAM", "NOT_APPLICABLE", "NO_MATCH", "PROPERTIES",
    "UNDETERMINED", "WHAT", "Answer", "Fingerprint", "Verdict", "fingerprint", "main",
]
