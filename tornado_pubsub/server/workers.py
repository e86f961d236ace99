"""``--processes N``: N worker processes accepting on one port.

The parent binds the listening socket once, forks the
workers, forwards SIGTERM/SIGINT to them so each drains gracefully, and
restarts a worker that crashed.  Only meaningful with the Redis broker (the
settings refuse it otherwise): the workers share nothing but Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Callable

from tornado.netutil import bind_sockets

from tornado_pubsub.logs import flush_logs, log_op
from tornado_pubsub.server.run import announce
from tornado_pubsub.settings import Settings

# A worker that keeps crashing is not restarted forever.
MAX_RESTARTS = 10


#: Exit codes of a worker killed by a forwarded SIGTERM or SIGINT.
STOPPED_BY_SIGNAL = (-signal.SIGTERM, -signal.SIGINT)


def run_workers(settings: Settings, serve: Callable[..., object]) -> int:
    """Fork ``settings.processes`` workers running ``serve(settings, sockets, worker=n)``
    (n = 1..N; a restarted worker keeps the number of the one it replaces);
    return once all have exited."""
    # Bound once here and inherited by every worker (no SO_REUSEPORT: that
    # would also let an unrelated process bind the same port beside us).
    sockets = bind_sockets(settings.port, settings.address)
    port = sockets[0].getsockname()[1]
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False

    def start(worker: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: its own event loop, the shared sockets
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            _drain_when_orphaned(parent)
            code = 0
            try:
                asyncio.run(serve(settings, sockets, worker=worker))  # type: ignore[arg-type]
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent's loop
                log_op("workers", logging.ERROR, exc_info=True, worker=worker, outcome="crashed")  # else it dies unexplained
                code = 1
            finally:
                flush_logs()  # os._exit skips logging.shutdown, which would write held records
                sys.stdout.flush()
                os._exit(code)
        children[pid] = worker

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    for worker in range(1, settings.processes + 1):
        start(worker)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log_op("workers", processes=settings.processes, port=port, pids=sorted(children), outcome="started")
    announce(settings, port, settings.processes)

    restarts = 0
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        worker = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and not stopping and restarts < MAX_RESTARTS:
            restarts += 1
            log_op("workers", pid=pid, worker=worker, exit_code=code, restarts=restarts, outcome="restarting")
            start(worker)
        elif code != 0 and not (stopping and code in STOPPED_BY_SIGNAL):
            # (A worker told to stop before it had set its own handlers dies
            # of the signal itself; it had nothing to drain yet: not a failure.)
            failed = True
    for sock in sockets:
        sock.close()
    return 1 if failed else 0


def _drain_when_orphaned(parent: int) -> None:
    """Ask Linux to send this worker SIGTERM if the parent dies (even by SIGKILL),
    so workers never outlive their supervisor holding the port."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return  # not Linux: the parent's signal forwarding is all there is
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
