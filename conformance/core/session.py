"""One conformance session: its options checked once, the rule and conventions it judges under
(and how they were chosen), the Hypothesis seed, and the command line that reproduces a failure.

Every bad option is a usage error (`OptionError`, which the plugin turns into pytest's exit
code 4) whose one line names the option, the value and the accepted values: never an
INTERNALERROR, and never a failure blamed on the implementation.

The plugin builds a `Session` at configure time and `start`s it; `reproduce` (the `reproduce:`
line of every failure message) reads it. Under pytest-xdist the controller decides the seed, the
rule and the conventions once and hands them to the workers (`for_workers`), so that the
fingerprint a decision needs runs once and every worker draws from the same seed.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adamw_conformance.core import catalogue

PACKAGE = "adamw_conformance"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
XFAILS_DIR = PACKAGE_DIR / "xfails"
#: The key of what the controller hands to pytest-xdist workers (`node.workerinput`).
WORKER_KEY = "adamw_conformance_session"
DEVICES = ("cpu", "cuda", "cuda:N")
DEFAULT_PROFILE = "dev"


class OptionError(Exception):
    """A bad option: the message is the one line a user reads (the plugin raises it as
    pytest.UsageError)."""


# --- checking options ----------------------------------------------------------------------------

def check_device(text: str) -> str:
    """`text` if it is a device the suite runs on (cpu, cuda, cuda:N), else OptionError."""
    if text in ("cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise OptionError(f"--device={text!r}: unknown device; accepted: {', '.join(DEVICES)} "
                      "(N: a CUDA device index)")


def packaged_xfails() -> list[str]:
    """The keys of the xfails lists that ship with the package (xfails/KEY.txt)."""
    return sorted(p.stem for p in XFAILS_DIR.glob("*.txt"))


def xfails_file(value: str, directory: Path | None = None) -> Path:
    """The file `--xfails=value` names: a path (relative to `directory`, default the current
    directory) or the key of a packaged list (`keras` = xfails/keras.txt); else OptionError."""
    path = Path(directory or Path.cwd(), value).expanduser()
    if path.is_file():
        return path
    if re.fullmatch(r"[\w.-]+", value) and (XFAILS_DIR / f"{value}.txt").is_file():
        return XFAILS_DIR / f"{value}.txt"
    why = "is a directory" if path.is_dir() else "no such file"
    raise OptionError(f"--xfails={value!r}: {why}, and not the key of a packaged list; "
                      f"accepted: a file of test ids, or one of {', '.join(packaged_xfails())}")


def read_xfails(path: Path, value: str) -> list[str]:
    """The entries of an xfails file (one per line, # comments), or OptionError."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise OptionError(f"--xfails={value!r}: cannot read {path}: {e}; accepted: a text "
                          f"file of test ids, or one of {', '.join(packaged_xfails())}") from None
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line)
    return entries


def profile_names() -> list[str]:
    from hypothesis import settings

    return sorted(settings._profiles)  # noqa: SLF001 - Hypothesis has no public list of profiles


def check_profile(name: str, where: str = "--hypothesis-profile") -> Any:
    """The Hypothesis settings of profile `name`, or OptionError naming the registered ones."""
    from hypothesis import settings
    from hypothesis.errors import InvalidArgument

    try:
        return settings.get_profile(name)
    except InvalidArgument:
        raise OptionError(f"{where}={name!r}: unknown profile; registered profiles: "
                          f"{', '.join(profile_names())}") from None


def check_report_dir(directory: Path) -> Path:
    """`directory` (created if missing) if a report can be written there, else OptionError:
    said before the run, not after it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise OptionError(f"--report-dir={str(directory)!r}: cannot write a report there "
                          f"({e.strerror or e}); accepted: a writable directory (default: "
                          "reports/ in the current directory)") from None
    return directory


def parse_conventions(text: str) -> Any:
    """The Convention `--conventions=text` names, or OptionError naming the accepted forms."""
    from adamw_conformance.spec.conventions import Convention

    try:
        return Convention.parse(text)
    except (ValueError, TypeError) as e:
        raise OptionError(f"--conventions={text!r}: {e}; accepted: default, auto, or "
                          "NAME=VALUE[,NAME=VALUE...] (see the README's conventions)") from None


def check_world_size(value: str | None, impl: str) -> int | None:
    """The ranks a sharded `impl` runs on (`--world-size`, default 2), None for another target;
    OptionError for a value that is not a rank count, or one given to a target not sharded."""
    from adamw_conformance.sharded import DEFAULT_WORLD, ENGINES, MAX_WORLD, split

    sharded = split(impl) is not None
    if value is None:
        return DEFAULT_WORLD if sharded else None
    accepted = f"accepted: an integer from 1 to {MAX_WORLD} (default {DEFAULT_WORLD})"
    try:
        world = int(str(value).strip())
    except ValueError:
        raise OptionError(f"--world-size={value!r}: not a number of ranks; {accepted}") from None
    if not 1 <= world <= MAX_WORLD:
        raise OptionError(f"--world-size={value!r}: out of range; {accepted}")
    if not sharded:
        raise OptionError(f"--world-size={value!r}: applies to a sharded target only, "
                          f"--impl=ENGINE:TARGET with ENGINE one of {', '.join(ENGINES)} "
                          f"(--impl={impl!r} is not)")
    return world


# --- the seed ------------------------------------------------------------------------------------

def choose_seed(given: str | None, derandomized: bool, worker: dict[str, Any] | None) -> str | None:
    """The seed Hypothesis draws from: None where the profile is derandomized (the seed is then
    ignored); the one given, the controller's (an xdist worker), or a fresh random one, so that
    the header can print it and a failure's reproduce line can pass it back."""
    if derandomized:
        return None
    if given is not None:
        return str(given)
    if worker and worker.get("seed") is not None:
        return str(worker["seed"])
    return str(random.SystemRandom().randrange(2**32))


# --- the rule ------------------------------------------------------------------------------------

def torch_base(adapter: Any) -> str | None:
    """For an optimizer class that is not torch's own and names no rule itself: the torch.optim
    class it derives from ('torch.optim.Adam'), whose rule its class hierarchy implies."""
    cls = getattr(adapter, "cls", None)
    if not isinstance(cls, type) or cls.__module__.split(".")[0] == "torch" \
            or isinstance(getattr(cls, "conformance_rule", None), str):
        return None
    import torch

    for base in cls.__mro__[1:]:
        if base.__module__.startswith("torch.optim") and base is not torch.optim.Optimizer:
            public = getattr(torch.optim, base.__qualname__, None) is base
            return (f"torch.optim.{base.__qualname__}" if public
                    else f"{base.__module__}.{base.__qualname__}")
    return None


def choose_rule(option: str, adapter: Any, caps: Any,
                behaviour: Callable[[], Any]) -> tuple[str, str]:
    """The rule to judge against and how it was chosen (for the header).

    `--rule=auto` takes what the target declares, or the rule its torch.optim class implies;
    but a class that is not torch's own is judged as the rule its behaviour shows
    (`behaviour()`: the fingerprint) where its class hierarchy and its behaviour disagree: a
    subclass of torch.optim.Adam that decouples its decay is AdamW, not Adam+L2. A subclass of
    AdamW stays AdamW whatever it shows."""
    from adamw_conformance.core import rules

    try:
        name = rules.choose(option, caps)
    except ValueError as e:
        raise OptionError(str(e)) from None
    if option != rules.AUTO:
        return name, "--rule"
    if not rules.declared(caps):
        return name, "auto: default; the target names no rule"
    base = torch_base(adapter)
    if base is None:
        cls = getattr(adapter, "cls", None)
        if isinstance(cls, type) and cls.__module__.split(".")[0] == "torch":
            return name, f"auto: the class is torch.optim.{cls.__qualname__}"
        return name, "auto: declared by the target"
    try:
        fp = behaviour()
        shown = fp.spec_rule()
    except Exception as e:  # noqa: BLE001 - the hierarchy's rule stands, saying why
        return name, (f"auto: the class derives from {base}; its behaviour could not be "
                      f"probed ({type(e).__name__}: {e})")
    if shown is None:
        return name, (f"auto: the class derives from {base}; its behaviour names no rule "
                      f"({fp.verdict().text})")
    if shown == name:
        return name, f"auto: the class derives from {base}; its behaviour agrees"
    if shown not in rules.ALL:
        return name, (f"auto: the class derives from {base}; its behaviour shows {shown}, "
                      "which the spec does not hold")
    if name == rules.DEFAULT_RULE:
        # Behaviour may only raise a claim to AdamW, never lower one: a subclass of AdamW whose
        # decay is L2 is a buggy AdamW, and judged as one.
        return name, (f"auto: the class derives from {base}; its behaviour shows {shown}, "
                      "judged as the AdamW its class claims")
    return shown, f"auto: behaviour; the class derives from {base}"


def lazy(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn`, called at most once (the fingerprint, which several decisions may need)."""
    box: dict[str, Any] = {}

    def once() -> Any:
        if "value" not in box:
            box["value"] = fn()
        return box["value"]

    return once


# --- the session and its reproduce line ----------------------------------------------------------

@dataclass
class Session:
    """The options a run is judged under, as resolved (the reproduce line passes them back)."""

    impl: str
    dtype: str = "float32"
    device: str = "cpu"
    compute_dtype: str | None = None
    rule: str = "adamw"
    rule_how: str = ""
    conventions: str = "default"  # the label of the conventions judged under
    #: --conventions=auto: what the fingerprint found (None where the conventions were named)
    conventions_auto: str | None = None
    xfails: str | None = None
    profile: str = DEFAULT_PROFILE
    seed: str | None = None  # None: the profile is derandomized
    timeout: float = 60.0
    hyper_dtype: str | None = None  # --hyper-dtype
    orders: str = "auto"  # --orders
    world_size: int | None = None  # --world-size: the ranks of a sharded target

    def options(self) -> list[str]:
        """The command-line options that reproduce this session's verdicts."""
        opts = [f"--impl={shlex.quote(self.impl)}", f"--dtype={self.dtype}",
                f"--device={self.device}"]
        if self.compute_dtype:
            opts.append(f"--compute-dtype={self.compute_dtype}")
        if self.hyper_dtype:
            opts.append(f"--hyper-dtype={self.hyper_dtype}")
        if self.orders != "auto":
            opts.append(f"--orders={self.orders}")
        opts += [f"--rule={self.rule}", f"--conventions={shlex.quote(self.conventions)}"]
        if self.xfails:
            opts.append(f"--xfails={shlex.quote(self.xfails)}")
        if self.world_size is not None:
            opts.append(f"--world-size={self.world_size}")
        if self.timeout != 60.0:
            opts.append(f"--impl-timeout={self.timeout:g}")
        opts.append(f"--hypothesis-profile={self.profile}")
        if self.seed is not None:
            opts.append(f"--hypothesis-seed={self.seed}")
        return opts

    def reproduce(self, prop: str) -> str:
        """The command that runs property `prop` ('bias.step_one') again as this session ran
        it, from the same directory."""
        return " ".join(["pytest", "--pyargs", catalogue.pyargs(prop), *self.options()])

    def seed_text(self) -> str:
        return self.seed if self.seed is not None else "derandomized"

    def for_workers(self) -> dict[str, Any]:
        return asdict(self)


_current: Session | None = None


def start(session: Session | None) -> None:
    global _current
    _current = session


def current() -> Session | None:
    return _current


def reproduce(cfg: Any, prop: str) -> str:
    """The reproduce line of a failure of `prop` judged with `cfg`: the session's options where
    a session runs (the variant tests' cfg differs from it only by the variant they select),
    else what `cfg` holds."""
    if _current is not None and _current.impl == cfg.impl_text:
        return _current.reproduce(prop)
    return Session(cfg.impl_text, cfg.dtype, cfg.device, cfg.compute,
                   cfg.model.rule_name, conventions=cfg.model.convention.label(),
                   timeout=cfg.timeout, profile=_profile_name()).reproduce(prop)


def _profile_name() -> str:
    from hypothesis import settings

    return settings._current_profile or DEFAULT_PROFILE  # noqa: SLF001 - only shown


def environment_profile() -> str:
    """The profile the suite loads when none is given: CONFORMANCE_PROFILE, else dev."""
    return os.environ.get("CONFORMANCE_PROFILE", DEFAULT_PROFILE)
