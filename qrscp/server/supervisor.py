"""The supervisor: accepts TCP connections and hands each to a forked worker at once.

The supervisor never reads from a client (docs/differences.md #4), so an idle or slow peer delays nobody. It
passes each accepted socket (``SCM_RIGHTS``) to a worker process that is waiting for one; a worker serves
one association at a time, then tells the supervisor it is ready again (and after
:data:`~qrscp.server.worker.WORKER_LIFETIME` associations it exits and is replaced). Forking a Python process costs several
milliseconds here, so workers are forked ahead of time (:data:`SPARE_WORKERS`) and reused, which keeps
fork off the association's path; a worker that dies takes only its own association with it.

Workers are reaped as soon as they exit (SIGCHLD wakes the loop). SIGTERM/SIGINT stop accepting and let
running associations finish within :data:`SHUTDOWN_GRACE` seconds (docs/differences.md #15); SIGHUP re-reads
the configuration file for associations that arrive afterwards. With ``-s`` connections are served inline,
one after another, in this process (and under ``python -m pdb``).
"""
from __future__ import annotations

import dataclasses
import errno
import gc
import os
import select
import signal
import socket
import sys
import time
from bdb import BdbQuit
from dataclasses import dataclass

import psutil

from qrscp import log
from qrscp.archive.journal import WriteJournal
from qrscp.config import config_file
from qrscp.config.association_profiles import Profile
from qrscp.config.config_file import Config
from qrscp.config.options import Options
from qrscp.net import pdu
from qrscp.server import association_handler, worker
from qrscp.server.context import ServerContext
from qrscp.server.policy import AssociationPolicy
from qrscp.server.scoreboard import Scoreboard

LOG = log.get_logger(log.DB)
APP_LOG = log.get_logger(log.APP)

#: Seconds a stop request waits for running associations before ending them.
SHUTDOWN_GRACE = 30.0
#: Idle workers kept waiting for the next connection.
SPARE_WORKERS = 2
#: Idle workers beyond this many are let go.
MAX_IDLE_WORKERS = 4


@dataclass(eq=False)
class WorkerHandle:
    """The supervisor's end of one worker: ``channel`` carries connections to it and "ready" back."""

    pid: int
    channel: socket.socket
    generation: int
    busy: bool = False


def notify_systemd(message: str) -> None:
    """Send ``message`` to systemd's notification socket, if we run under ``Type=notify``."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as error:
        APP_LOG.warning("cannot notify systemd: %s", error)


class Supervisor:
    """The accept loop of one server run."""

    def __init__(self, context: ServerContext, listener: socket.socket) -> None:
        self.context = context
        self.listener = listener
        self.workers: dict[int, WorkerHandle] = {}
        self.generation = 0  # bumped by a configuration reload: older workers retire
        self._stop = False
        self._reload = False
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_read, False)
        os.set_blocking(self._wakeup_write, False)
        supervisor_pid = os.getpid()
        self.context.request_shutdown = lambda: os.kill(supervisor_pid, signal.SIGUSR1)

    # -- signals -----------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            self._stop = True
        elif signum == signal.SIGHUP:
            self._reload = True

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wakeup_write, warn_on_full_buffer=False)
        stops = [signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP]
        if sys.gettrace() is None:  # under a debugger, Ctrl-C belongs to the debugger
            stops.append(signal.SIGINT)
        for signum in stops:
            signal.signal(signum, self._on_signal)
        if not self.context.options.single_process:
            signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; the exit code (0)."""
        self._install_signals()
        forking = not self.context.options.single_process
        if forking:
            self._replenish()
        notify_systemd(f"READY=1\nMAINPID={os.getpid()}")
        try:
            while not self._stop:
                if self._reload:
                    self._reload_config()
                connection = self._wait()
                if connection is not None:
                    sock, address = connection
                    if forking:
                        self._hand_over(sock, address)
                    else:
                        self._serve_inline(sock, address)
                if forking:
                    self._reap()
                    self._replenish()
        finally:
            notify_systemd("STOPPING=1")
            self.listener.close()
            for handle in list(self.workers.values()):  # busy ones finish their association first
                self._retire(handle)
            self._wait_for_children()
            if self.context.scoreboard is not None:
                self.context.scoreboard.close()
        return 0

    def _wait(self) -> tuple[socket.socket, tuple] | None:
        """Wait for a connection, a signal or a worker's message; the accepted connection, if any."""
        busy = {handle.channel: handle for handle in self.workers.values() if handle.busy}
        try:
            readable, _, _ = select.select([self.listener, self._wakeup_read, *busy], [], [])
        except InterruptedError:
            return None
        if self._wakeup_read in readable:
            try:
                while os.read(self._wakeup_read, 512):
                    pass
            except BlockingIOError:
                pass
        for channel in readable:
            if channel in busy:
                self._worker_message(busy[channel])
        if self.listener not in readable or self._stop:
            return None
        try:
            return self.listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                LOG.error("cannot accept connection: %s", error)
            return None

    def _worker_message(self, handle: WorkerHandle) -> None:
        """A busy worker is ready again (or has gone: the reaper will see it)."""
        try:
            message = handle.channel.recv(16)
        except OSError:
            message = b""
        if message.endswith(worker.READY) and handle.generation == self.generation:
            handle.busy = False
        else:
            self._retire(handle)

    def _serve_inline(self, sock: socket.socket, address: tuple) -> None:
        try:
            association_handler.handle_connection(sock, address, self.context)
        except BdbQuit:  # the debugger's quit (-s under pdb) ends the server, not just this association
            raise
        except Exception:  # a bug must not end a server that runs forever
            LOG.exception("association ended by an internal error")
            sock.close()

    # -- workers -----------------------------------------------------------------------------------

    def _hand_over(self, sock: socket.socket, address: tuple) -> None:
        """Give the connection to an idle worker (forking one if none is ready); never reads from it."""
        try:
            while True:
                handle = next((h for h in self.workers.values() if not h.busy), None) or self._fork_worker()
                if handle is None:  # more live workers than the table holds: refuse without reading anything
                    LOG.info("Refusing Association (TooManyAssociations)")
                    sock.setblocking(False)
                    sock.send(pdu.encode_associate_rj(2, 3, 2))
                    return
                try:
                    worker.hand_over(handle.channel, sock, address)
                    handle.busy = True
                    return
                except OSError:  # that worker is gone: retire it and try the next
                    self._retire(handle)
        except OSError:
            pass
        finally:
            sock.close()

    def _replenish(self) -> None:
        """Keep :data:`SPARE_WORKERS` (and at most :data:`MAX_IDLE_WORKERS`) workers idle."""
        idle = [handle for handle in self.workers.values() if not handle.busy]
        for handle in idle[MAX_IDLE_WORKERS:]:
            self._retire(handle)
        for _ in range(SPARE_WORKERS - len(idle)):
            if self._stop or self._fork_worker() is None:
                return

    def _retire(self, handle: WorkerHandle) -> None:
        """Close a worker's channel: an idle worker exits at once, a busy one after its association."""
        handle.channel.close()
        self.workers.pop(handle.pid, None)

    def _dismiss_idle(self) -> None:
        for handle in [h for h in self.workers.values() if not h.busy]:
            self._retire(handle)

    def _fork_worker(self) -> WorkerHandle | None:
        scoreboard = self.context.scoreboard
        assert scoreboard is not None
        slot = scoreboard.claim()
        if slot is None:
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        gc.freeze()  # keep the objects every worker inherits out of the workers' collections (no copy-on-write)
        pid = os.fork()
        if pid == 0:
            ours.close()
            signal.set_wakeup_fd(-1)
            for inherited in (self.listener, *(handle.channel for handle in self.workers.values())):
                inherited.close()
            os.close(self._wakeup_read)
            os.close(self._wakeup_write)
            worker.run(theirs, slot, self.context)
        theirs.close()
        scoreboard.assign(slot, pid)
        handle = WorkerHandle(pid, ours, self.generation)
        self.workers[pid] = handle
        return handle

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            handle = self.workers.pop(pid, None)
            if handle is not None:
                handle.channel.close()
            if self.context.scoreboard is not None:
                self.context.scoreboard.release_pid(pid)
            if os.WIFSIGNALED(status):
                LOG.error("worker %d killed by signal %s: its association, if any, was lost", pid,
                          signal.Signals(os.WTERMSIG(status)).name)
            elif os.WEXITSTATUS(status):
                LOG.error("worker %d ended with exit code %d", pid, os.WEXITSTATUS(status))
            else:
                LOG.info("Cleaned up after child (%d)", pid)

    def _live_children(self) -> bool:
        self._reap()
        return bool(self._children_pids())

    @staticmethod
    def _children_pids() -> list[int]:
        return [child.pid for child in psutil.Process().children()]

    def _wait_for_children(self) -> None:
        """At stop: let busy workers finish their associations (bounded), then end them."""
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self._live_children() and time.monotonic() < deadline:
            time.sleep(0.05)
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if not self._live_children():
                return
            LOG.warning("ending association(s) still running after %.0f s", SHUTDOWN_GRACE)
            for pid in self._children_pids():
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + 5
            while self._live_children() and time.monotonic() < end:
                time.sleep(0.05)

    def _reload_config(self) -> None:
        """SIGHUP: read the configuration file again; keep the old one if the new one is bad."""
        self._reload = False
        path = self.context.options.config_file
        try:
            new_config = config_file.load(path)
        except config_file.ConfigFileError as error:
            APP_LOG.error("%s (keeping the previous configuration)", error)
            return
        policy = AssociationPolicy(self.context.options, new_config, self.context.policy.incoming_profile)
        self.context = dataclasses.replace(self.context, config=new_config, policy=policy)
        self.generation += 1
        self._dismiss_idle()  # forked with the old configuration; busy ones retire when they are done
        APP_LOG.info("re-read configuration file %s", path)


def make_context(options: Options, config: Config, profiles: tuple[Profile, Profile] | None = None) -> ServerContext:
    """The shared state of a server run (``profiles``: the ``-xf`` incoming and outgoing profiles)."""
    incoming, outgoing = profiles or (None, None)
    forking = not options.single_process
    return ServerContext(options=options, config=config, policy=AssociationPolicy(options, config, incoming),
                         scoreboard=Scoreboard() if forking else None, journal=WriteJournal() if forking else None,
                         outgoing_profile=outgoing)
