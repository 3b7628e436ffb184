"""The supervisor: keeps a pool of forked workers that accept and serve the connections themselves.

The supervisor never touches a connection (docs/differences.md #4): workers inherit the listening socket
and each takes the next connection when it is idle (:mod:`qrscp.server.worker`), so no connection passes
through this process and an idle or slow peer delays nobody. Forking a Python process costs several
milliseconds here, so workers are forked ahead of time: :data:`~qrscp.server.worker.SPARE_WORKERS` wait
for connections, and a worker that takes one leaving fewer waiting asks the supervisor for more (at most
:data:`MAX_IDLE_WORKERS` are kept waiting). Each worker serves one association at a time; one that dies takes only its own association.
``MaxAssociations`` is applied by the workers against the shared scoreboard.

Workers are reaped as soon as they exit (SIGCHLD wakes the loop). SIGTERM/SIGINT stop accepting and let
running associations finish within :data:`SHUTDOWN_GRACE` seconds (docs/differences.md #15); SIGHUP re-reads
the configuration file for associations that arrive afterwards. With ``-s`` connections are accepted and
served inline, one after another, in this process (and under ``python -m pdb``).
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
from dataclasses import dataclass

import psutil

from qrscp import log
from qrscp.archive.journal import WriteJournal
from qrscp.config import config_file
from qrscp.config.association_profiles import Profile
from qrscp.config.config_file import Config
from qrscp.config.options import Options
from qrscp.server import association_handler, worker
from qrscp.server.context import ServerContext
from qrscp.server.policy import AssociationPolicy
from qrscp.server.scoreboard import Scoreboard
from qrscp.server.tls_contexts import TLSContexts

LOG = log.get_logger(log.DB)
APP_LOG = log.get_logger(log.APP)

#: Seconds a stop request waits for running associations before ending them.
SHUTDOWN_GRACE = 30.0
#: Seconds between the SIGTERM and the SIGKILL of the workers still running after the grace.
KILL_DELAY = 5.0
#: Waiting workers beyond this many are let go.
MAX_IDLE_WORKERS = 2
#: Workers beyond MaxAssociations, for the connections that are refused (2/3/2) or have not yet sent their
#: A-ASSOCIATE-RQ; connections beyond wait in the listen backlog until a worker is free.
EXTRA_WORKERS = 64
#: Seconds between the supervisor's looks at the scoreboard when nothing wakes it.
HOUSEKEEPING_INTERVAL = 1.0


@dataclass(eq=False)
class WorkerHandle:
    """The supervisor's end of one worker: ``channel`` carries its requests for more workers (closing it
    retires the worker)."""

    pid: int
    channel: socket.socket


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
            self.listener.setblocking(False)   # idle workers race for each connection
            self._replenish()
        notify_systemd(f"READY=1\nMAINPID={os.getpid()}")
        try:
            while not self._stop:
                if self._reload:
                    self._reload_config()
                if forking:
                    self._wait_for_workers()
                    self._reap()
                    self._replenish()
                else:
                    self._serve_next()
        finally:
            notify_systemd("STOPPING=1")
            try:   # stops listening in every process (the workers hold the same socket): new connections are refused
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            for handle in list(self.workers.values()):  # busy ones finish their association first
                self._retire(handle)
            self._wait_for_children()
            if self.context.scoreboard is not None:
                self.context.scoreboard.close()
        return 0

    def _wait_for_workers(self) -> None:
        """Wait for a signal, a worker's request or the housekeeping interval."""
        channels = {handle.channel.fileno(): handle for handle in self.workers.values()}
        waiting = select.poll()   # (no descriptor limit, unlike select)
        for fd in (self._wakeup_read, *channels):
            waiting.register(fd, select.POLLIN)
        try:
            ready = [fd for fd, _event in waiting.poll(HOUSEKEEPING_INTERVAL * 1000)]
        except InterruptedError:
            return
        if self._wakeup_read in ready:
            self._drain_wakeup()
        for fd in ready:
            handle = channels.get(fd)
            if handle is not None:
                try:
                    request = handle.channel.recv(64)
                except OSError:
                    request = b""
                if not request:   # the worker has gone (the reaper will see it)
                    self._retire(handle)

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_read, 512):
                pass
        except BlockingIOError:
            pass

    def _serve_next(self) -> None:
        """``-s``: accept the next connection and serve it here, then return."""
        try:
            readable, _, _ = select.select([self.listener, self._wakeup_read], [], [])
        except InterruptedError:
            return
        if self._wakeup_read in readable:
            self._drain_wakeup()
        if self.listener not in readable or self._stop:
            return
        try:
            sock, address = self.listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                LOG.error("cannot accept connection: %s", error)
            return
        association_handler.serve(sock, address, self.context)

    # -- workers -----------------------------------------------------------------------------------

    def _replenish(self) -> None:
        """Keep :data:`~qrscp.server.worker.SPARE_WORKERS` (and at most :data:`MAX_IDLE_WORKERS`) workers waiting."""
        scoreboard = self.context.scoreboard
        assert scoreboard is not None
        waiting = [pid for pid in scoreboard.waiting() if pid in self.workers]
        for pid in waiting[MAX_IDLE_WORKERS:]:
            self._retire(self.workers[pid])
        for _ in range(worker.SPARE_WORKERS - len(waiting)):
            if self._stop or self._fork_worker() is None:
                return

    def _retire(self, handle: WorkerHandle) -> None:
        """Close a worker's channel: a waiting worker exits at once, a busy one after its association."""
        handle.channel.close()
        self.workers.pop(handle.pid, None)

    def _fork_worker(self) -> WorkerHandle | None:
        """A new worker, or None when there are enough (:data:`EXTRA_WORKERS`) or the system has no more
        processes or descriptors to give (logged; the next housekeeping tick tries again)."""
        scoreboard = self.context.scoreboard
        assert scoreboard is not None
        if len(self.workers) >= self.context.config.max_associations + EXTRA_WORKERS:
            return None
        slot = scoreboard.claim()
        if slot is None:
            return None
        supervisor = os.getpid()
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as error:
            scoreboard.release_slot(slot)
            LOG.error("cannot start a worker: %s", error)
            return None
        gc.freeze()  # keep the objects every worker inherits out of the workers' collections (no copy-on-write)
        try:
            pid = os.fork()
        except OSError as error:
            gc.unfreeze()
            ours.close()
            theirs.close()
            scoreboard.release_slot(slot)
            LOG.error("cannot start a worker: %s", error)
            return None
        if pid == 0:
            ours.close()
            signal.set_wakeup_fd(-1)
            for handle in self.workers.values():
                handle.channel.close()
            os.close(self._wakeup_read)
            os.close(self._wakeup_write)
            worker.run(self.listener, theirs, slot, self.context, supervisor)
        gc.unfreeze()   # the supervisor's own garbage stays collectable
        theirs.close()
        scoreboard.assign(slot, pid)
        handle = WorkerHandle(pid, ours)
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
        """At stop: let busy workers finish their associations (bounded), then end them: SIGTERM, and
        SIGKILL for those still there :data:`KILL_DELAY` seconds later."""
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self._live_children() and time.monotonic() < deadline:
            time.sleep(0.05)
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if not self._live_children():
                return
            if signum == signal.SIGTERM:
                LOG.warning("ending association(s) still running after %.0f s", SHUTDOWN_GRACE)
            for pid in self._children_pids():
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + KILL_DELAY
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
        for handle in list(self.workers.values()):   # forked with the old configuration: waiting ones exit
            self._retire(handle)                     # now, busy ones after their association
        APP_LOG.info("re-read configuration file %s", path)


def make_context(options: Options, config: Config, profiles: tuple[Profile, Profile] | None = None,
                 tls: TLSContexts | None = None) -> ServerContext:
    """The shared state of a server run (``profiles``: the ``-xf`` incoming and outgoing profiles; ``tls``:
    the contexts of ``+tls``)."""
    incoming, outgoing = profiles or (None, None)
    forking = not options.single_process
    return ServerContext(options=options, config=config, policy=AssociationPolicy(options, config, incoming),
                         scoreboard=Scoreboard() if forking else None, journal=WriteJournal() if forking else None,
                         outgoing_profile=outgoing, tls=tls)
