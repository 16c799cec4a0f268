"""Which rule of the spec a target is judged against, and which properties apply to which rule.

`--rule=auto` (the default) asks the target: an adapter or optimizer class may name its rule in
a `rule` (or `conformance_rule`) attribute, and the torch adapter knows torch.optim's classes
(`TorchOptimizerAdapter.rule`). Anything else is judged as AdamW, the suite's first rule.

`APPLIES` says which property families hold for which rules (read from each rule's entry in
`core.rule_table`); the plugin skips the rest with a reason naming the rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adamw_conformance.core.rule_table import L2, RESTRICTED, TABLE, info
from adamw_conformance.spec import registry

if TYPE_CHECKING:
    from adamw_conformance.adapters.base import Capabilities

AUTO = "auto"
DEFAULT_RULE = "adamw"

ALL = frozenset(TABLE)

#: The Adam family: the rules the conventions (`spec.conventions`) and AMSGrad apply to.
ADAM_FAMILY = frozenset(n for n, i in TABLE.items() if i.family == "adam")

#: Rules whose step is unchanged, bitwise, when the gradient and eps scale by 2^k (with
#: weight_decay = 0 where the decay is L2, added to the gradient): the adaptive rules.
#: `tests/test_rule_facts.py` proves the homogeneity (the table's state degrees) symbolically.
SCALE_FREE = frozenset(n for n, i in TABLE.items() if i.scale_free)

#: Rules whose weight decay is L2, added to the gradient (PyTorch skips the addition at
#: weight_decay = 0, the spec adds 0 * theta: they differ only where theta is already NaN/inf).
L2_COUPLED = frozenset(n for n, i in TABLE.items() if i.decay == L2)

#: property (catalogue id, or family) -> the rules it holds for. Not listed: every rule.
APPLIES: dict[str, frozenset[str]] = {
    prop: frozenset(n for n, i in TABLE.items() if prop in i.applies) for prop in RESTRICTED}


def state_degree(rule_name: str, state: str) -> int:
    """How `state` of the rule scales when the gradient scales by c: by c^degree (m, buf and
    gavg like g; v, vmax and accum like g^2; RMSProp's momentum buffer, which accumulates
    g/avg, not at all). Used to scale a replayed state with its gradient (scale.*)."""
    return info(rule_name).state[state].degree


def detect(caps: Capabilities) -> str:
    """The rule the target declares (or its torch.optim class implies), else AdamW."""
    return caps.rule or DEFAULT_RULE


def declared(caps: Capabilities) -> bool:
    """Whether the target names its rule (an attribute, or a torch.optim class the adapter
    knows), rather than falling back to DEFAULT_RULE."""
    return caps.rule is not None


def choose(option: str, caps: Capabilities) -> str:
    """The rule named by `--rule` (auto: detected); ValueError naming the known rules."""
    name = detect(caps) if option == AUTO else option
    if name not in ALL:
        raise ValueError(f"--rule={option!r}: {'the target declares ' if option == AUTO else ''}"
                         f"unknown rule {name!r}; known rules: auto, {', '.join(registry.names())}")
    return name


def not_applicable(catalogue_id: str, rule_name: str) -> str | None:
    """Why property `catalogue_id` does not apply to `rule_name`, or None if it does."""
    family = catalogue_id.split(".", 1)[0]
    for key in (catalogue_id, family):
        if key in APPLIES and rule_name not in APPLIES[key]:
            return (f"{catalogue_id} does not apply to rule {rule_name} "
                    f"(it holds for: {', '.join(sorted(APPLIES[key]))})")
    return None
