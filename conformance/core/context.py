"""The run context of the suite in progress, read where it cannot be handed over: by Hypothesis
strategies, built at import and drawn from inside a test (the rule and the hyperparameters the
target pins), and by every verdict (the recorder of a report).

The plugin begins a session when pytest configures a run of the suite, keeps it in that run's
`config.stash` and ends it when pytest unconfigures the run, so that a run inside another run
(`pytest.main` in-process) leaves the outer one as it found it. Outside any run, `current()` is
the default session: rule AdamW, nothing pinned, no recorder unless `record.recording()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adamw_conformance.core.rules import DEFAULT_RULE

if TYPE_CHECKING:
    from adamw_conformance.core.record import Recorder


@dataclass
class Session:
    rule: str = DEFAULT_RULE
    #: hyperparameters the target fixes, by spec name: the strategies draw no other value
    pinned: Mapping[str, float] = field(default_factory=dict)
    #: where verdicts are recorded (record.py); None: not recording
    recorder: Recorder | None = None
    #: the target's block-quantized states (StateLayout.quantized): the strategies draw
    #: tensors large enough to be quantized; empty: none seen
    quantized: str = ""
    #: the target compiles its step once per tensor shape (core/compile_reuse.py): every
    #: property draws its shapes from the small set core/strategies.py: SHAPE_SET
    shape_set: bool = False
    #: the target compiles its step once per value of some hyperparameters
    #: (core/compile_reuse.py): the strategies draw them from these sets (empty: as they like)
    value_sets: tuple[dict[str, float], ...] = ()


#: The default session, then one per run in progress, innermost last.
_STACK: list[Session] = [Session()]


def current() -> Session:
    return _STACK[-1]


def in_run() -> bool:
    """Whether a run of the suite is in progress (not the default session)."""
    return len(_STACK) > 1


def begin(rule: str, pinned: Mapping[str, float] | None = None) -> Session:
    """A new innermost session; it records where the enclosing one does (a detection sweep
    records the runs it starts)."""
    session = Session(rule, dict(pinned or {}), current().recorder)
    _STACK.append(session)
    return session


def end(session: Session) -> None:
    """End `session` (and leave the others as they are; the default session never ends)."""
    for i in range(len(_STACK) - 1, 0, -1):
        if _STACK[i] is session:
            del _STACK[i]
            return
