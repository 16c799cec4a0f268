"""One rank's process: `python -m adamw_conformance.sharded.worker HOST PORT RANK WORLD STORE_PORT`.

It connects back to the parent (multiprocessing.connection, authenticated with the key the
parent passes in the environment), joins the gloo process group through the parent's TCPStore,
and answers calls until told to stop. It never outlives the parent: a parent-death signal where
the kernel has one (Linux prctl), and a watchdog thread that exits the moment the parent is gone
(its pid changes), whatever the main thread is stuck in.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from typing import Any

from adamw_conformance.sharded import MARKER_ENV  # noqa: F401 (the pool sets it)

AUTHKEY_ENV = "ADAMW_CONFORMANCE_SHARD_KEY"


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the watchdog alone

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(70)
            time.sleep(0.2)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(70)


def main(argv: list[str]) -> None:
    host, port, rank, world, store_port, parent = (argv[0], int(argv[1]), int(argv[2]),
                                                   int(argv[3]), int(argv[4]), int(argv[5]))
    _die_with_parent(parent)
    # The parent asks a rank that does not return where it is (SIGUSR1): its stacks go to
    # stderr, which the parent reads before it takes the rank down.
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    # Ctrl-C reaches the whole process group: the parent decides, and takes its workers down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from multiprocessing.connection import Client

    conn = Client((host, port), authkey=bytes.fromhex(os.environ[AUTHKEY_ENV]))
    conn.send(("hello", rank, os.getpid()))
    import torch.distributed as dist

    store = dist.TCPStore(host, store_port, world, is_master=False)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    conn.send_bytes(pickle.dumps(("ok", "ready")))
    runs: dict[int, Any] = {}
    targets: dict[tuple[str, str], Any] = {}
    while True:
        try:
            op, run_id, args, free = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)
        for r in free:
            runs.pop(r, None)
        if op == "stop":
            conn.send_bytes(pickle.dumps(("ok", None)))
            break
        try:
            reply = ("ok", _call(op, run_id, args, runs, targets))
        except BaseException as e:  # noqa: BLE001 - everything the target raises is reported
            reply = ("error", type(e).__name__, str(e) or repr(e),
                     "".join(traceback.format_exception(e))[-4000:], _portable(e))
        conn.send_bytes(pickle.dumps(reply))
    dist.destroy_process_group()


def _portable(e: BaseException) -> BaseException | None:
    """The exception itself where it survives a pickle (the parent raises it, as a target that
    raises on every rank raised it), else None."""
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:  # noqa: BLE001 - anything that does not round-trip
        return None
    e.__traceback__ = None
    return e


def _call(op: str, run_id: int, args: tuple, runs: dict[int, Any],
          targets: dict[tuple[str, str], Any]) -> Any:
    if op == "function":  # a function of the package run on every rank (the benchmark's)
        module, name, fargs = args
        if not module.startswith("adamw_conformance."):
            raise ValueError(f"not a module of the suite: {module}")
        import importlib

        return getattr(importlib.import_module(module), name)(*fargs)
    if op == "create":
        engine, build, setup = args
        from adamw_conformance.sharded.engines import load_class

        key = (build.text, build.directory)
        if key not in targets:
            targets[key] = load_class(*key)
        runs[run_id] = run_class(engine)(build, targets[key], setup)
        return None
    return getattr(runs[run_id], op)(*args)


def run_class(engine: str) -> type:
    """The run class of `engine`; DeepSpeed's imported only when asked for (here, not in
    engines.py, which deepspeed_engine builds on)."""
    from adamw_conformance.sharded.engines import RUNS

    if engine.startswith("deepspeed-"):
        from adamw_conformance.sharded.deepspeed_engine import DeepSpeedRun, DeepSpeedZero1Run

        return DeepSpeedZero1Run if engine == "deepspeed-zero1" else DeepSpeedRun
    return RUNS[engine]


if __name__ == "__main__":
    main(sys.argv[1:])

