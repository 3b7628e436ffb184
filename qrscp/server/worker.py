"""A worker process: accepts connections on the shared listening socket and serves one association at a time.

The supervisor forks workers ahead of time; each inherits the listening socket and waits on it (an
``EPOLLEXCLUSIVE`` wait, so one connection wakes one waiting worker) and on its channel to the supervisor. Its
state is in the scoreboard; when taking a connection leaves no other worker waiting, it asks the supervisor
for more (:data:`NEED_WORKERS`), so the next connections find a worker while it serves. It exits when the supervisor closes the channel (stop, reload, too many waiting workers) or after
:data:`WORKER_LIFETIME` connections; a worker that dies takes only its own association with it. The
supervisor itself never touches a connection.
"""
from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import socket
import sys
import time

from qrscp import log
from qrscp.server import association_handler
from qrscp.server.context import ServerContext

LOG = log.get_logger(log.DB)

#: What a worker tells its supervisor when no other worker is left waiting for connections.
NEED_WORKERS = b"N"
#: Workers kept waiting for the next connection.
SPARE_WORKERS = 1
_PR_SET_PDEATHSIG = 1
#: Connections a worker takes before it exits and is replaced (bounds any slow growth).
WORKER_LIFETIME = 1000


def run(listener: socket.socket, channel: socket.socket, slot: int, context: ServerContext, supervisor: int) -> None:
    """In a forked worker: serve connections from ``listener`` until the supervisor retires us (closes
    ``channel``) or the lifetime is over; never returns."""
    status = 0
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        _stop_listening_when_orphaned(listener, supervisor)
        scoreboard = context.scoreboard
        assert scoreboard is not None
        waiting = select.epoll()
        waiting.register(listener, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        waiting.register(channel, select.EPOLLIN)
        served = 0
        while served < WORKER_LIFETIME:
            events = dict(waiting.poll())
            if channel.fileno() in events:   # the supervisor closed the channel: retire, after taking the
                served = WORKER_LIFETIME     # connection this wake-up was for (no other worker was woken)
            if listener.fileno() not in events:
                continue
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):   # another worker was quicker
                continue
            except OSError as error:
                if error.errno == errno.EINVAL:   # the supervisor stopped listening: the server stops
                    break
                LOG.error("cannot accept connection: %s", error)
                time.sleep(0.1)   # out of descriptors, say: do not spin
                continue
            served += 1
            if not scoreboard.mark_connected(slot):
                try:
                    channel.sendall(NEED_WORKERS)
                except OSError:   # the supervisor is gone or retired us: serve this one, then go
                    served = WORKER_LIFETIME
            try:
                association_handler.serve(sock, address, context, slot)
            finally:
                scoreboard.mark_idle(slot)
    except BaseException:
        LOG.exception("worker ended by an internal error")
        status = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(status)


def _stop_listening_when_orphaned(listener: socket.socket, supervisor: int) -> None:
    """If the supervisor dies (SIGKILL), stop listening on its port at once (``shutdown`` acts on the socket
    every worker shares), so that a new server can bind it while the orphaned workers finish their
    associations. The kernel tells us with ``PR_SET_PDEATHSIG``."""
    def stop_listening(*_: object) -> None:
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    signal.signal(signal.SIGUSR2, stop_listening)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGUSR2)
    if os.getppid() != supervisor:   # it died before the request took effect
        stop_listening()
