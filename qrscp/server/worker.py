"""A worker process: serves the connections its supervisor hands it, one association at a time.

The supervisor forks workers ahead of time and passes each accepted connection over a Unix socket pair
(``SCM_RIGHTS``, with the peer's address). After each association the worker marks itself idle in the
scoreboard and answers :data:`READY`; after :data:`WORKER_LIFETIME` associations, or when the supervisor
closes its end, it exits and is replaced.
"""
from __future__ import annotations

import os
import signal
import socket
import sys

from qrscp import log
from qrscp.server import association_handler
from qrscp.server.context import ServerContext

LOG = log.get_logger(log.DB)

#: What a worker sends its supervisor when it is ready for the next connection.
READY = b"R"
#: Associations a worker serves before it exits and is replaced (bounds any slow growth).
WORKER_LIFETIME = 1000


def hand_over(channel: socket.socket, sock: socket.socket, address: tuple[str, int]) -> None:
    """Supervisor: pass the connection ``sock`` from ``address`` to the worker at the other end of
    ``channel``. Raises ``OSError`` when that worker is gone."""
    socket.send_fds(channel, [f"{address[0]}\n{address[1]}".encode()], [sock.fileno()])


def run(channel: socket.socket, slot: int, context: ServerContext) -> None:
    """In a forked worker: serve the connections the supervisor sends until it retires us; never returns."""
    status = 0
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        scoreboard = context.scoreboard
        assert scoreboard is not None
        for remaining in range(WORKER_LIFETIME - 1, -1, -1):
            try:
                message, fds, _flags, _address = socket.recv_fds(channel, 256, 1)
            except OSError:  # the supervisor closed its end with our "ready" unread (a reset): retire
                break
            if not fds:  # the supervisor closed the channel: retire
                break
            host, port = message.decode().split("\n")
            try:
                association_handler.handle_connection(socket.socket(fileno=fds[0]), (host, int(port)), context,
                                                      slot)
            except Exception:  # a bug must end only this association
                LOG.exception("association ended by an internal error")
            finally:
                scoreboard.mark_idle(slot)
            if not remaining:  # retire without announcing readiness: no connection can be lost
                break
            try:
                channel.sendall(READY)
            except OSError:  # the supervisor retired us (stop or reload) while we were busy
                break
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
