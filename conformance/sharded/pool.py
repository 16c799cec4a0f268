"""The parent's side of the worker processes: start them, broadcast each call to every rank,
and turn a rank that raises, hangs or dies into one readable failure that names the rank.

One pool per world size serves the whole suite run (every test, both engines); a pool whose
ranks may no longer agree (one hung or died, or the others were left inside a collective) is
taken down, every process killed and reaped, and the next run starts a fresh one. Nothing
outlives the parent: the pool is closed at exit, and the workers watch the parent themselves
(worker.py). Messages are plain pickles (send_bytes): the Connection's own pickler would hand
tensors over as shared memory, which torch registers it to do.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pickle
import queue
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection, Listener, wait
from typing import Any

from adamw_conformance.core.errors import ImplementationError, _short_path
from adamw_conformance.sharded.worker import AUTHKEY_ENV, MARKER_ENV

#: How long the other ranks get to answer once one rank has raised or died: they are then
#: usually waiting inside a collective for it, and will not.
GRACE = 2.0


class RankFailure(ImplementationError):
    """One or more ranks raised, hung or died in a call: the message names each."""


def _spawner() -> queue.Queue:
    """Workers are started from one long-lived thread: a parent-death signal fires when the
    thread that started a process ends, and the suite's calls run in short-lived threads."""
    requests: queue.Queue = queue.Queue()

    def serve() -> None:
        while True:
            argv, env, err, box, done = requests.get()
            try:
                box.append(subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=err))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box.append(e)
            done.set()

    threading.Thread(target=serve, name="shard-spawner", daemon=True).start()
    return requests


_SPAWN: queue.Queue | None = None


def _popen(argv: list[str], env: dict[str, str], err: Any) -> subprocess.Popen:
    global _SPAWN
    if _SPAWN is None:
        _SPAWN = _spawner()
    box: list[Any] = []
    done = threading.Event()
    _SPAWN.put((argv, env, err, box, done))
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _stuck_frame(dump: str) -> str | None:
    """From a faulthandler dump of every thread: the main thread's innermost frame that is not
    the standard library's threading ('impl/sharded/failing.py:46 in misbehave'), or None."""
    for block in re.split(r"\n(?:Current thread|Thread) 0x", "\n" + dump):
        frames = [ln.strip() for ln in block.splitlines() if ln.strip().startswith("File ")]
        if not any("sharded/worker.py" in ln and " in main" in ln for ln in frames):
            continue
        for ln in frames:
            if "/threading.py" in ln:
                continue
            path, _, rest = ln[len('File "'):].partition('", line ')
            return f"{_short_path(path)}:{rest}"
    return None


def _how_it_ended(code: int | None) -> str:
    if code is None:
        return "died (its connection closed)"
    if code < 0:
        try:
            return f"died (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"died (killed by signal {-code})"
    return f"died (exit code {code})"


class WorkerPool:
    """`world` worker processes, one per rank, joined in one gloo process group."""

    def __init__(self, world: int, start_timeout: float = 120.0) -> None:
        import torch.distributed as dist

        self.world = world
        self.lock = threading.Lock()
        self.broken: str | None = None
        self.procs: list[subprocess.Popen] = []
        self.logs = [tempfile.TemporaryFile() for _ in range(world)]
        self.pending_free: list[int] = []
        key = secrets.token_bytes(16)
        self.listener = Listener(("127.0.0.1", 0), authkey=key)
        host, port = self.listener.address
        # The store's port is the kernel's choice: parallel runs never collide on one.
        self.store = dist.TCPStore("127.0.0.1", 0, world + 1, is_master=True,
                                   wait_for_workers=False)
        env = {**os.environ, AUTHKEY_ENV: key.hex(), MARKER_ENV: str(os.getpid()),
               "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        try:
            for rank in range(world):
                argv = [sys.executable, "-m", "adamw_conformance.sharded.worker", host,
                        str(port), str(rank), str(world), str(self.store.port),
                        str(os.getpid())]
                # the variables a launcher sets (DeepSpeed requires them)
                ranks = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                         "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                         "MASTER_PORT": str(self.store.port)}
                self.procs.append(_popen(argv, {**env, **ranks}, self.logs[rank]))
            self.conns = self._accept(start_timeout)
            self._collect("starting the workers", start_timeout)
        except BaseException:
            self.close()
            raise

    def _accept(self, timeout: float) -> list[Connection]:
        conns: list[Connection | None] = [None] * self.world
        deadline = time.monotonic() + timeout
        accepted: list[Connection] = []

        def accept() -> None:
            while len(accepted) < self.world:
                try:
                    accepted.append(self.listener.accept())
                except OSError:
                    return

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        while t.is_alive() and time.monotonic() < deadline:
            dead = [r for r, p in enumerate(self.procs) if p.poll() is not None]
            if dead:
                r = dead[0]
                raise RankFailure(f"rank {r} of {self.world} {_how_it_ended(self.procs[r].poll())}"
                                  f" while starting{self._log(r)}")
            t.join(0.05)
        if t.is_alive():
            raise RankFailure(f"the {self.world} workers did not connect within {timeout:g} s")
        for c in accepted:
            _, rank, _pid = c.recv()
            conns[rank] = c
        return [c for c in conns if c is not None]

    def _log(self, rank: int) -> str:
        text = self._text(rank).strip()
        lines = [ln for ln in text.splitlines() if "Warning" not in ln and ln.strip()]
        return (": its last words: " + " | ".join(lines[-3:])) if lines else ""

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def call(self, op: str, run_id: int, args: tuple, what: str, timeout: float) -> list[Any]:
        """`op(*args)` of run `run_id` on every rank; each rank's result, or RankFailure."""
        with self.lock:
            if self.broken is not None:
                raise RankFailure(f"the workers were taken down earlier ({self.broken})")
            free, self.pending_free = self.pending_free, []
            message = pickle.dumps((op, run_id, args, free))
            for c in self.conns:
                try:
                    c.send_bytes(message)
                except OSError:
                    pass  # a dead rank: its EOF below says so
            return self._collect(what, timeout)

    def _collect(self, what: str, timeout: float) -> list[Any]:
        replies: dict[int, tuple] = {}
        ended: dict[int, str] = {}
        deadline = time.monotonic() + timeout
        waiting = {c: r for r, c in enumerate(self.conns)}
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for c in wait(list(waiting), left):
                r = waiting.pop(c)  # type: ignore[call-overload]
                try:
                    replies[r] = pickle.loads(c.recv_bytes())
                except (EOFError, OSError):
                    self.procs[r].wait(1.0) if self.procs[r].poll() is None else None
                    ended[r] = _how_it_ended(self.procs[r].poll()) + self._log(r)
                if replies.get(r, ("ok",))[0] != "ok" or r in ended:
                    deadline = min(deadline, time.monotonic() + GRACE)
        if not ended and len(replies) == self.world \
                and all(rep[0] == "ok" for rep in replies.values()):
            return [replies[r][1] for r in range(self.world)]
        return self._fail(what, replies, ended, timeout)

    def _fail(self, what: str, replies: dict[int, tuple], ended: dict[int, str],
              timeout: float) -> list[Any]:
        errors = {(rep[1], rep[2]) for rep in replies.values() if rep[0] != "ok"}
        if not ended and len(replies) == self.world and len(errors) == 1 \
                and all(rep[0] != "ok" for rep in replies.values()) \
                and isinstance(replies[0][4], BaseException):
            # Every rank raised the same: the target's own error (a refused hyperparameter),
            # raised as a target on one process raises it; the ranks are still in step.
            raise replies[0][4]
        parts = [f"rank {r} of {self.world} {ended[r]} in {what}" for r in sorted(ended)]
        hung = [r for r in range(self.world) if r not in ended and r not in replies]
        for r in range(self.world):
            if r not in ended and r in replies and replies[r][0] != "ok":
                _, kind, message, _tb, _e = replies[r]
                parts.append(f"rank {r} of {self.world} raised {kind} in {what}: {message}")
        where, alone = self._where(hung), not parts
        for r in hung:
            cause = (f"did not return within {timeout:g} s" if alone else
                     "did not return (waiting for the rank above, in a collective)")
            parts.append(f"rank {r} of {self.world} {cause} from {what}"
                         + (f": stuck in {where[r]}" if where.get(r) else ""))
        if ended or hung:
            self.broken = "; ".join(parts)
            self.close()
        raise RankFailure("; ".join(parts))

    def _where(self, ranks: list[int]) -> dict[int, str]:
        """Where each rank in `ranks` is stuck: its innermost frame outside the standard
        library's threading, from the stacks it dumps on SIGUSR1 (worker.py)."""
        for r in ranks:
            if self.procs[r].poll() is None:
                self.procs[r].send_signal(signal.SIGUSR1)
        out: dict[int, str] = {}
        deadline = time.monotonic() + 3.0
        for r in ranks:
            while time.monotonic() < deadline:
                frame = _stuck_frame(self._text(r))
                if frame is not None:
                    out[r] = frame
                    break
                time.sleep(0.05)
        return out

    def _text(self, rank: int) -> str:
        f = self.logs[rank]
        try:
            f.seek(0)
            return f.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        """Kill every worker and reap it: nothing is left behind."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for c in getattr(self, "conns", []):
            c.close()
        self.listener.close()
        for f in self.logs:
            f.close()
        if self.broken is None:
            self.broken = "closed"


_POOLS: dict[int, WorkerPool] = {}
#: Keep the pools past the end of a suite run (until `close_all` or the interpreter's exit):
#: for the project's tests, which run the suite many times in one process.
KEEP_ACROSS_RUNS = False
_IDS = itertools.count(1)
_LOCK = threading.Lock()


def pool(world: int, start_timeout: float) -> WorkerPool:
    """The running pool of `world` ranks, started where there is none (or it was taken down)."""
    with _LOCK:
        current = _POOLS.get(world)
        if current is None or current.broken is not None:
            current = _POOLS[world] = WorkerPool(world, start_timeout)
        return current


def new_id() -> int:
    return next(_IDS)


def end_of_run() -> None:
    """A suite run ended: its workers go with it (unless KEEP_ACROSS_RUNS)."""
    if not KEEP_ACROSS_RUNS:
        close_all()


def close_all() -> None:
    """Take every pool down (the end of a suite run, the interpreter's exit)."""
    with _LOCK:
        for p in _POOLS.values():
            p.close()
        _POOLS.clear()


atexit.register(close_all)
