"""The command line: `python -m adamw_conformance.tools.fingerprint` and `adamw-fingerprint`.

It prints the table of answers, one `verdict:` line and the command that judges the target
against what was found (or, with --json, the same as JSON), and exits with the verdict's code
(verdict.EXIT_CODES). A command line that cannot be used is one `error:` line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from adamw_conformance.tools.fingerprint.answers import ADAM_FAMILY, CONVENTIONS_DOC
from adamw_conformance.tools.fingerprint.result import Fingerprint
from adamw_conformance.tools.fingerprint.runner import fingerprint
from adamw_conformance.tools.fingerprint.verdict import (
    EXIT_UNDRIVEN,
    EXIT_USAGE,
    exit_codes_text,
)

DTYPES = ("float32", "float64", "bfloat16", "float16")
DEVICES = ("cpu", "cuda")


class UsageError(Exception):
    """A command line that cannot be used: the one line that says why."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m adamw_conformance.tools.fingerprint",
        description="Which AdamW conventions an implementation follows, from its behaviour\n"
                    f"(the conventions are described in {CONVENTIONS_DOC}).",
        epilog="exit codes:\n" + exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", required=True, help="the target, as for pytest conformance")
    p.add_argument("--dtype", default="float32", metavar="{" + ",".join(DTYPES) + "}",
                   help="the parameters' dtype (default float32)")
    p.add_argument("--device", default="cpu", metavar="{" + ",".join(DEVICES) + "}",
                   help="where the parameters live (default cpu)")
    p.add_argument("--impl-timeout", type=float, default=60.0,
                   help="seconds each call into the target may take (default 60)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Fingerprint the --impl target; the exit code is its verdict's (or 2: usage error)."""
    try:
        args = parser().parse_args(argv)
        adapter = _usable(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    fp = fingerprint(adapter, args.dtype, args.device, args.impl_timeout, impl_text=args.impl)
    if args.json:
        print(json.dumps({**fp.as_dict(), "command": fp.command()}, indent=2))
        return fp.verdict().code
    return _print(fp, args, adapter)


def _usable(args: argparse.Namespace) -> Any:
    """The adapter of --impl, once every option is checked; UsageError says what is wrong."""
    from adamw_conformance.core.targets import TargetError, resolve

    for option, value, accepted in (("--dtype", args.dtype, DTYPES),
                                    ("--device", args.device, DEVICES)):
        if value not in accepted:
            raise UsageError(f"{option}={value!r}: accepted values are {', '.join(accepted)}")
    if args.impl_timeout <= 0:
        raise UsageError(f"--impl-timeout={args.impl_timeout:g}: give a positive number of "
                         "seconds")
    try:
        adapter = resolve(args.impl)
    except TargetError as e:
        raise UsageError(str(e)) from e
    except Exception as e:  # noqa: BLE001 - an adapter whose construction raises, say
        raise UsageError(f"--impl={args.impl!r}: setting up the target raised "
                         f"{type(e).__name__}: {e}") from e
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UsageError("--device=cuda but no CUDA device is available here")
    return adapter


def _print(fp: Fingerprint, args: argparse.Namespace, adapter: Any) -> int:
    """The table, the verdict line and what to run next; the verdict's exit code."""
    verdict = fp.verdict()
    version = getattr(adapter, "version", "unknown")
    print(f"fingerprint of {args.impl} (version {version}; {args.dtype} on {args.device})\n")
    print(fp.table())
    print(f"\nverdict: {verdict.text}")
    if verdict.code == EXIT_UNDRIVEN:
        print("the suite would fail every test that steps it, with the same cause")
        return verdict.code
    if fp.answers.get("rule") is not None and fp.answers["rule"].value != ADAM_FAMILY:
        from adamw_conformance.core.rules import detect
        from adamw_conformance.core.targets import capabilities
        print(f"the suite judges it against rule {detect(capabilities(adapter))} (--rule=auto; "
              "--rule=NAME "
              "names another): expect failures that show where its steps differ")
        return verdict.code
    print(f"conventions: {fp.conventions_text()}")
    if fp.rule_name() == "adam_l2":
        print("note: weight decay enters the gradient (Adam+L2): the suite judges AdamW, so "
              "decouple.* will fail; that is the finding, not a convention to declare")
    print(f"judge it against them:\n  {fp.command()}")
    return verdict.code
