"""Helpers shared by the tests: DCMTK's tools, free ports, running our programs."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DCMTK_BIN = Path("/usr/bin")


def dcmtk(tool: str) -> str:
    """Absolute path of DCMTK's ``tool`` (pynetdicom's same-named scripts may come first on PATH)."""
    return str(DCMTK_BIN / tool)


HAVE_DCMTK = (DCMTK_BIN / "dcmqrscp").exists() and (DCMTK_BIN / "storescu").exists()
needs_dcmtk = pytest.mark.skipif(not HAVE_DCMTK, reason="DCMTK is not installed")


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK processes: TCP_NODELAY=1, or every exchange waits on Nagle."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_dcmtk(tool: str, *args: str, cwd: str | Path | None = None, timeout: float = 60,
              input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run DCMTK's ``tool`` and capture its output."""
    return subprocess.run([dcmtk(tool), *args], cwd=cwd, env=dcmtk_env(), capture_output=True,
                          timeout=timeout, input=input)


def run_qrscp(*args: str, cwd: str | Path | None = None, timeout: float = 60,
              module: str = "qrscp") -> subprocess.CompletedProcess:
    """Run ``python -m qrscp`` (or another of our modules) and capture its output."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          timeout=timeout)


def wait_for_port(port: int, timeout: float = 15.0, process: subprocess.Popen | None = None,
                  host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on ``host``:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


#: Every server of ours the tests started (their logs are checked for internal errors after each test).
STARTED: list[Server] = []


class Server:
    """A real server process (ours or DCMTK's) on 127.0.0.1, for the tests to talk to.

    ``config`` is the text of a configuration file written to ``directory/server.cfg``; the server runs
    with ``directory`` as its working directory. Stopped with SIGTERM (then SIGKILL) by ``stop()``.
    ``interpreter``: the command that runs ``-m qrscp ...`` (another Python, or one behind a launcher
    that ends in ``exec``); ``host``: where it answers (``::1`` for an IPv6-only server).
    """

    def __init__(self, directory: Path, config: str, *args: str, dcmtk_server: bool = False,
                 port: int | None = None, host: str = "127.0.0.1",
                 interpreter: Sequence[str] = (sys.executable,)) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.config_path = self.directory / "server.cfg"
        self.config_path.write_text(config.replace("{port}", str(self.port)))
        self.stderr_path = self.directory / ("dcmtk.err" if dcmtk_server else "qrscp.err")
        self.stdout_path = self.directory / ("dcmtk.out" if dcmtk_server else "qrscp.out")
        if dcmtk_server:
            command = [dcmtk("dcmqrscp"), "-c", str(self.config_path), *args, str(self.port)]
            env = dcmtk_env()
        else:
            command = [*interpreter, "-m", "qrscp", "-c", str(self.config_path), *args, str(self.port)]
            env = dict(os.environ)
        self._stderr = open(self.stderr_path, "wb")
        self._stdout = open(self.stdout_path, "wb")
        if not dcmtk_server:
            STARTED.append(self)
        self.process = subprocess.Popen(command, cwd=self.directory, env=env, stdout=self._stdout,
                                        stderr=self._stderr)
        try:
            wait_for_port(self.port, process=self.process, host=host)
        except Exception:
            self.stop()
            raise

    @property
    def log(self) -> str:
        """What the server wrote to stderr so far."""
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def wait_for_log(self, text: str, since: int = 0, timeout: float = 10) -> str:
        """The log from offset ``since``, once it contains ``text`` (AssertionError after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log[since:]
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged; the log says:\n{log[-3000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20) -> int:
        """Stop the server (SIGTERM, then SIGKILL); its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()
        self._stdout.close()
        return self.process.returncode

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def simple_config(areas: dict[str, str] | None = None, extra: str = "", host_table: str = "",
                  vendor_table: str = "", max_associations: int = 16) -> str:
    """A configuration text: ``areas`` maps AE title -> 'path access (quota) peers' tail."""
    areas = areas or {"QRSCP": "area RW (200, 1024mb) ANY"}
    lines = ["NetworkTCPPort = {port}", "MaxPDUSize = 16384", f"MaxAssociations = {max_associations}", extra]
    if host_table:
        lines += ["HostTable BEGIN", host_table.strip(), "HostTable END"]
    if vendor_table:
        lines += ["VendorTable BEGIN", vendor_table.strip(), "VendorTable END"]
    lines += ["AETable BEGIN"]
    lines += [f"{title} {tail}" for title, tail in areas.items()]
    lines += ["AETable END", ""]
    return "\n".join(lines)


def echoscu(port: int, *args: str, called: str = "QRSCP", calling: str = "ECHOSCU",
            timeout: float = 30) -> subprocess.CompletedProcess:
    """DCMTK's echoscu against 127.0.0.1:``port``."""
    return run_dcmtk("echoscu", "-aec", called, "-aet", calling, *args, "127.0.0.1", str(port), timeout=timeout)


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", default=False,
                     help="run the long soak, load and fuzz variants (minutes instead of seconds)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long run: use --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def long_run(request) -> bool:
    """True when the suite runs in its long mode (``--long``): soak and fuzz for minutes."""
    return bool(request.config.getoption("--long"))


class LogLines(logging.Handler):
    """The ``X: message`` lines logged under DCMTK's logger names."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname[0]}: {record.getMessage()}")


@pytest.fixture
def dcmtk_log() -> Iterator[list[str]]:
    """The log lines written to the ``dcmtk`` logger tree during the test."""
    logger = logging.getLogger("dcmtk")
    handler = LogLines()
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


#: What our server logs when an exception reaches its catch-all: a bug, whatever the input.
INTERNAL_ERROR = "internal error"


@pytest.fixture(autouse=True)
def no_internal_errors() -> Iterator[None]:
    """Fail the test during which any of our servers logged an internal error: bad input must end as a
    status or an abort, never reach the catch-all."""
    seen = {id(server): len(server.log) for server in STARTED}
    yield
    for server in list(STARTED):
        logged = server.log[seen.get(id(server), 0):]
        if server.process.poll() is not None:   # stopped: this was its last check
            STARTED.remove(server)
        assert INTERNAL_ERROR not in logged, f"the server logged an internal error:\n{logged[-4000:]}"
