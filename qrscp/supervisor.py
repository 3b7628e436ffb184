"""The supervisor: accepts TCP connections and hands each to a forked worker at once.

The supervisor never reads from a client (decisions.md #4), so an idle or slow peer delays nobody.
Workers are reaped as soon as they exit (SIGCHLD wakes the loop). SIGTERM/SIGINT stop accepting and let
running associations finish within :data:`SHUTDOWN_GRACE` seconds (decisions.md #15); SIGHUP re-reads
the configuration file for associations that arrive afterwards. With ``-s`` connections are served inline,
one after another, in this process (and under ``python -m pdb``).
"""
from __future__ import annotations

import dataclasses
import errno
import os
import select
import signal
import socket
import sys
import time

from qrscp import config as config_module
from qrscp import log, pdu, worker
from qrscp.policy import AssociationPolicy
from qrscp.scoreboard import Scoreboard
from qrscp.worker import Server

LOG = log.get_logger(log.DB)
APP_LOG = log.get_logger(log.APP)

#: Seconds a stop request waits for running associations before ending them.
SHUTDOWN_GRACE = 30.0


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

    def __init__(self, server: Server, listener: socket.socket) -> None:
        self.server = server
        self.listener = listener
        self.children: set[int] = set()
        self._stop = False
        self._reload = False
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_read, False)
        os.set_blocking(self._wakeup_write, False)
        supervisor_pid = os.getpid()
        self.server.request_shutdown = lambda: os.kill(supervisor_pid, signal.SIGUSR1)

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
        if not self.server.options.single_process:
            signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def run(self) -> int:
        """Serve until stopped; the exit code (0)."""
        self._install_signals()
        notify_systemd(f"READY=1\nMAINPID={os.getpid()}")
        try:
            while not self._stop:
                if self._reload:
                    self._reload_config()
                connection = self._wait_for_connection()
                if connection is None:
                    self._reap()
                    continue
                sock, address = connection
                if self.server.options.single_process:
                    self._serve_inline(sock, address)
                else:
                    self._fork_worker(sock, address)
                    self._reap()
        finally:
            notify_systemd("STOPPING=1")
            self.listener.close()
            self._wait_for_children()
            if self.server.scoreboard is not None:
                self.server.scoreboard.close()
        return 0

    def _wait_for_connection(self) -> tuple[socket.socket, tuple] | None:
        try:
            readable, _, _ = select.select([self.listener, self._wakeup_read], [], [])
        except InterruptedError:
            return None
        if self._wakeup_read in readable:
            try:
                while os.read(self._wakeup_read, 512):
                    pass
            except BlockingIOError:
                pass
        if self.listener not in readable or self._stop:
            return None
        try:
            return self.listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                LOG.error("cannot accept connection: %s", error)
            return None

    def _serve_inline(self, sock: socket.socket, address: tuple) -> None:
        try:
            worker.handle_connection(sock, address, self.server)
        except Exception:  # a bug must not end a server that runs forever
            LOG.exception("association ended by an internal error")
            sock.close()

    def _fork_worker(self, sock: socket.socket, address: tuple) -> None:
        scoreboard = self.server.scoreboard
        assert scoreboard is not None
        slot = scoreboard.claim()
        if slot is None:  # more live workers than the table holds: refuse without reading anything
            LOG.info("Refusing Association (TooManyAssociations)")
            try:
                sock.setblocking(False)
                sock.send(pdu.encode_associate_rj(2, 3, 2))
            except OSError:
                pass
            sock.close()
            return
        pid = os.fork()
        if pid == 0:
            self._run_child(sock, address, slot)
        scoreboard.assign(slot, pid)
        self.children.add(pid)
        sock.close()

    def _run_child(self, sock: socket.socket, address: tuple, slot: int) -> None:
        """In the forked worker: serve the association, then exit without returning."""
        status = 0
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            self.listener.close()
            os.close(self._wakeup_read)
            os.close(self._wakeup_write)
            worker.handle_connection(sock, address, self.server, slot)
        except BaseException:
            LOG.exception("association ended by an internal error")
            status = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(status)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            if self.server.scoreboard is not None:
                self.server.scoreboard.release_pid(pid)
            LOG.info("Cleaned up after child (%d)", pid)

    def _wait_for_children(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if not self.children:
                return
            LOG.warning("ending %d association(s) still running after %.0f s", len(self.children), SHUTDOWN_GRACE)
            for pid in list(self.children):
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + 5
            while self.children and time.monotonic() < end:
                self._reap()
                time.sleep(0.05)

    def _reload_config(self) -> None:
        """SIGHUP: read the configuration file again; keep the old one if the new one is bad."""
        self._reload = False
        path = self.server.options.config_file
        try:
            new_config = config_module.load(path)
        except config_module.ConfigFileError as error:
            APP_LOG.error("%s (keeping the previous configuration)", error)
            return
        self.server = dataclasses.replace(self.server, config=new_config,
                                          policy=AssociationPolicy(self.server.options, new_config))
        APP_LOG.info("re-read configuration file %s", path)


def make_server(options, config) -> Server:
    """The shared state of a server run."""
    scoreboard = None if options.single_process else Scoreboard()
    return Server(options=options, config=config, policy=AssociationPolicy(options, config), scoreboard=scoreboard)
