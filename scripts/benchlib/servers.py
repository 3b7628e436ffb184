"""The servers under test (qrscp, DCMTK's dcmqrscp, Orthanc), DCMTK's client tools and the C-MOVE
receiver, all on 127.0.0.1.

A *storage area* is what one measurement stores into or queries; the benchmark names each one by an AE
title. qrscp and dcmqrscp serve all areas from one process with one configuration file (one AETable line
per area, the same quota-free limits for both); Orthanc has one database per process, so it runs one
process per area, started when the area is first used and stopped when the benchmark releases it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchlib.tls import Credentials

DCMTK_BIN = Path("/usr/bin")
ORTHANC_CANDIDATES = (Path("/usr/sbin/Orthanc"), Path("/usr/bin/Orthanc"), Path("/usr/local/bin/Orthanc"))
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The configuration every server gets: the default PDU size and association limit of dcmqrscp, and the
#: highest quota a CTN storage area allows (docs/quota.md: 500 studies, 1 GiB per study).
MAX_PDU = 16384
MAX_ASSOCIATIONS = 16
QUOTA = "(500, 1024mb)"
#: Our own AE title as a client, and the C-MOVE receiver's.
CLIENT_AE = "BENCHSCU"
RECEIVER_AE = "STORESCP"


def dcmtk(tool: str) -> str:
    """Absolute path of DCMTK's ``tool`` (pynetdicom installs scripts of the same names on PATH)."""
    return str(DCMTK_BIN / tool)


def have_dcmtk(tool: str = "storescu") -> bool:
    """Whether DCMTK's ``tool`` is installed."""
    return (DCMTK_BIN / tool).exists()


def orthanc_binary() -> Path | None:
    """The Orthanc executable, or None when Orthanc is not installed."""
    found = shutil.which("Orthanc")
    candidates = ([Path(found)] if found else []) + list(ORTHANC_CANDIDATES)
    return next((path for path in candidates if path.exists()), None)


def dcmtk_env() -> dict[str, str]:
    """Environment for anything built on DCMTK's network library (its tools, dcmqrscp, Orthanc):
    TCP_NODELAY=1, DCMTK's best setting (without it every exchange waits 40 ms on Nagle)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    """Block until something accepts on ``port``; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f} s")


def tail(path: Path, lines: int = 5) -> str:
    """The last ``lines`` lines of a log file (for error messages)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def stop_process(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL: only the process we started (and, for the CTN servers, the workers it
    forked, which are in its own process group)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # forked workers left behind
    except (ProcessLookupError, PermissionError):
        pass


def process_tree(root: int) -> list[psutil.Process]:
    """``root`` and all its descendants (forked workers)."""
    try:
        process = psutil.Process(root)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass(frozen=True)
class Endpoint:
    """Where to send requests for one storage area."""

    port: int
    called_ae: str
    pid: int  # the process whose tree serves the area (for memory sampling)
    tls: Credentials | None = None  # the credentials to connect with, when the server requires TLS


@dataclass(frozen=True)
class Area:
    """A storage area: its AE title and what it holds before the benchmark starts.

    ``index`` is a ready ``index.dat`` (qrscp, dcmqrscp) and ``orthanc_db`` a ready Orthanc storage
    directory, for prefilled areas; both None for an empty one. Prefilled areas are copied, unless
    ``read_only`` (only queried): then the area's ``index.dat`` is a hard link to ``index``, and Orthanc
    runs on ``orthanc_db`` itself."""

    title: str
    index: Path | None = None
    orthanc_db: Path | None = None
    read_only: bool = False


class Server(ABC):
    """A server under test: ``add_area`` for every area, ``start`` once, then ``endpoint``/``release``
    around each use of an area, ``stop`` at the end. With ``tls``, it accepts TLS only, with the server's
    credentials, and sends C-MOVE sub-operations over TLS (the receiver must then be a TLS one)."""

    name: str
    #: Why this server cannot run with TLS, or "" if it can.
    no_tls = ""

    def __init__(self, directory: Path, receiver_port: int, tls: Credentials | None = None) -> None:
        if tls is not None and self.no_tls:
            raise NotImplementedError(self.no_tls)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.receiver_port = receiver_port
        self.tls = tls
        self.areas: dict[str, Area] = {}
        #: ``time.perf_counter()`` when the last server process was started
        self.started_at = 0.0

    def add_area(self, area: Area) -> None:
        self.areas[area.title] = area

    @abstractmethod
    def start(self) -> None:
        """Start serving every area added so far."""

    @abstractmethod
    def endpoint(self, title: str) -> Endpoint:
        """The endpoint of area ``title`` (started on demand where needed)."""

    def release(self, title: str) -> None:
        """The benchmark is done with area ``title``."""

    @abstractmethod
    def stop(self) -> None:
        """Stop every process of this server."""

    @abstractmethod
    def problem(self) -> str | None:
        """Why the server cannot serve right now (it exited), or None."""


class CtnServer(Server):
    """qrscp or dcmqrscp: one process (forking a worker per association), one AE title per area."""

    def __init__(self, directory: Path, receiver_port: int, tls: Credentials | None = None) -> None:
        super().__init__(directory, receiver_port, tls)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.stopped = False
        self.log = self.directory / "server.log"

    @abstractmethod
    def command(self, config: Path) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that start the server with ``config``."""

    def config_text(self) -> str:
        lines = [f"NetworkTCPPort = {self.port}", f"MaxPDUSize = {MAX_PDU}",
                 f"MaxAssociations = {MAX_ASSOCIATIONS}",
                 "HostTable BEGIN",
                 f"receiver = ({RECEIVER_AE}, localhost, {self.receiver_port}), "
                 f"({RECEIVER_AE}, 127.0.0.1, {self.receiver_port})",
                 "HostTable END",
                 "AETable BEGIN"]
        lines += [f"{title} {self.area_directory(title)} RW {QUOTA} ANY" for title in self.areas]
        lines += ["AETable END", ""]
        return "\n".join(lines)

    def area_directory(self, title: str) -> Path:
        return self.directory / "areas" / title

    def start(self) -> None:
        for title, area in self.areas.items():
            directory = self.area_directory(title)
            directory.mkdir(parents=True, exist_ok=True)
            if area.index is not None and area.read_only:
                (directory / "index.dat").unlink(missing_ok=True)
                os.link(area.index, directory / "index.dat")
            elif area.index is not None:
                copy_to_disk(area.index, directory / "index.dat")
        config = self.directory / "server.cfg"
        config.write_text(self.config_text())
        command, env = self.command(config)
        with open(self.log, "ab") as log:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(command, cwd=self.directory, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True)
        try:
            wait_for_port(self.port, self.process, self.log)
        except Exception:
            self.stop()
            raise

    def endpoint(self, title: str) -> Endpoint:
        if title not in self.areas:
            raise KeyError(f"no area {title}")
        assert self.process is not None
        return Endpoint(self.port, title, self.process.pid, self.tls)

    def stop(self) -> None:
        if self.process is not None and not self.stopped:
            stop_process(self.process)
            self.stopped = True

    def problem(self) -> str | None:
        if self.process is None:
            return "not started"
        if self.process.poll() is not None:
            return f"server exited with {self.process.returncode}: {tail(self.log)}"
        return None


class QrscpServer(CtnServer):
    name = "qrscp"

    def command(self, config: Path) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO_ROOT), env.get("PYTHONPATH"))))
        tls = self.tls.dcmtk_server_options() if self.tls else []
        return [sys.executable, "-m", "qrscp", "-c", str(config), *tls, str(self.port)], env


class DcmtkServer(CtnServer):
    name = "dcmtk"
    no_tls = "DCMTK 3.6.7's dcmqrscp has no TLS (3.7.0 added it)"

    def command(self, config: Path) -> tuple[list[str], dict[str, str]]:
        return [dcmtk("dcmqrscp"), "-c", str(config), str(self.port)], dcmtk_env()


#: Orthanc's GDCM plugin where Debian's ``orthanc-gdcm`` installs it.
ORTHANC_GDCM = Path("/usr/share/orthanc/plugins/libOrthancGdcm.so")


class OrthancServer(Server):
    """Orthanc: one process and database per area, configured by a JSON file in the area's directory."""

    name = "orthanc"

    def __init__(self, directory: Path, receiver_port: int, tls: Credentials | None = None) -> None:
        super().__init__(directory, receiver_port, tls)
        self.binary = orthanc_binary()
        self.running: dict[str, tuple[subprocess.Popen, int]] = {}
        self.failed: str | None = None

    def start(self) -> None:
        if self.binary is None:
            raise RuntimeError("Orthanc is not installed")

    def _configuration(self, title: str, port: int, storage: Path) -> dict:
        receiver = {"AET": RECEIVER_AE, "Host": "127.0.0.1", "Port": self.receiver_port,
                    "UseDicomTls": self.tls is not None}
        tls = {} if self.tls is None else {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(self.tls.server_certificate),
            "DicomTlsPrivateKey": str(self.tls.server_key),
            "DicomTlsTrustedCertificates": str(self.tls.authority),
            "DicomTlsRemoteCertificateRequired": True,
        }
        return tls | {
            "Name": f"bench {title}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "MaximumStorageSize": 0,
            "MaximumPatientCount": 0,
            # Orthanc decodes JPEG 2000 only with its GDCM plugin: loaded for the transcoding rows' area
            "Plugins": [str(ORTHANC_GDCM)] if title == "TX" and ORTHANC_GDCM.exists() else [],
            "HttpServerEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": title,
            "DicomPort": port,
            "MaximumPduLength": MAX_PDU,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {RECEIVER_AE: receiver},
            "SaveJobs": False,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
        }

    def endpoint(self, title: str) -> Endpoint:
        if title not in self.running:
            area = self.areas[title]
            directory = self.directory / title
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            storage = directory / "db"
            if area.orthanc_db is not None and area.read_only:
                storage = area.orthanc_db
            elif area.orthanc_db is not None:
                copy_orthanc_database(area.orthanc_db, storage)
            self.running[title] = self.launch(title, directory, storage)
        process, port = self.running[title]
        return Endpoint(port, title, process.pid, self.tls)

    def launch(self, title: str, directory: Path, storage: Path) -> tuple[subprocess.Popen, int]:
        """An Orthanc process with its configuration and log in ``directory`` and its database in
        ``storage``, accepting on a free port; (process, port)."""
        if self.binary is None:
            raise RuntimeError("Orthanc is not installed")
        port = free_port()
        config = directory / "orthanc.json"
        config.write_text(json.dumps(self._configuration(title, port, storage), indent=2))
        log = directory / "orthanc.log"
        with open(log, "ab") as log_file:
            self.started_at = time.perf_counter()
            process = subprocess.Popen([str(self.binary), str(config)], cwd=directory, env=dcmtk_env(),
                                       stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                       start_new_session=True)
        try:
            wait_for_port(port, process, log)
        except Exception:
            stop_process(process)
            raise
        return process, port

    def release(self, title: str) -> None:
        if title in self.running:
            process, _ = self.running.pop(title)
            stop_process(process)

    def stop(self) -> None:
        for title in list(self.running):
            self.release(title)

    def problem(self) -> str | None:
        for title, (process, _) in self.running.items():
            if process.poll() is not None:
                return f"Orthanc of {title} exited with {process.returncode}: " \
                       f"{tail(self.directory / title / 'orthanc.log')}"
        return None


def copy_to_disk(source: Path, target: Path) -> None:
    """Copy a file and wait until the copy is on disk: a prefilled area is measured as an archive's
    would be, not while the kernel writes hundreds of megabytes of it back (which slows every write to
    the file, and the disk, meanwhile)."""
    shutil.copyfile(source, target)
    with open(target, "rb+") as copy:
        os.fsync(copy.fileno())


def copy_orthanc_database(source: Path, target: Path) -> None:
    """A private copy of an Orthanc storage directory: the stored files (never changed by Orthanc) are
    hard-linked, the SQLite index (top-level files) is copied."""
    shutil.copytree(source, target, copy_function=os.link)
    for entry in source.iterdir():
        if entry.is_file():
            (target / entry.name).unlink()
            copy_to_disk(entry, target / entry.name)


SERVER_CLASSES: dict[str, type[Server]] = {cls.name: cls for cls in (QrscpServer, DcmtkServer, OrthancServer)}


class Receiver:
    """DCMTK's ``storescp`` as the C-MOVE destination, writing into ``directory`` (a tmpfs if possible);
    with ``tls``, it accepts TLS only, with the server's credentials."""

    def __init__(self, directory: Path, tls: Credentials | None = None) -> None:
        self.directory = Path(directory)
        self.port = free_port()
        self.tls = tls
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory.parent / f"{self.directory.name}.log"
        tls = self.tls.dcmtk_server_options() if self.tls else []
        with open(log, "ab") as log_file:
            self.process = subprocess.Popen(
                [dcmtk("storescp"), "-aet", RECEIVER_AE, *tls, "-od", str(self.directory), str(self.port)],
                env=dcmtk_env(), stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
        wait_for_port(self.port, self.process, log)

    def clear(self) -> None:
        for entry in self.directory.iterdir():
            entry.unlink()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@dataclass(frozen=True)
class Memory:
    """The memory of one process, bytes: resident, proportional (shared pages divided among their
    users) and unique (what its exit would free)."""

    rss: int
    pss: int
    uss: int


def serving_process_memory(root: int, client_port: int) -> Memory:
    """The memory of the process of ``root``'s tree that holds the server end of the TCP connection
    whose client end is ``client_port`` on 127.0.0.1 (the worker serving that association)."""
    for process in process_tree(root):
        try:
            if any(c.raddr and c.raddr.port == client_port for c in process.net_connections(kind="tcp")):
                info = process.memory_full_info()
                return Memory(info.rss, info.pss, info.uss)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    raise LookupError(f"no process of {root}'s tree serves the connection from port {client_port}")


class PeakMemory:
    """Samples the PSS (proportional set size) of a process tree in a background thread and keeps the
    highest sum seen: ``with PeakMemory(pid) as peak: ...; peak.megabytes``."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root = root
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        total = 0
        for process in process_tree(self.root):
            try:
                total += process.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self.peak = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())

    @property
    def megabytes(self) -> float:
        return self.peak / 1e6
