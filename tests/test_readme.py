"""The README as a newcomer meets it: the set-up's first command in one terminal and the quick start in
another, run as written in a fresh copy of the checkout with Debian's own python3 (/usr/bin/python3), as
root and as an unprivileged user; the debugger recipe, in the checkout and elsewhere; the systemd
installation into a virtual environment under /opt, with the unit verified against it; and the figures
the suite can count.

The commands keep their ports (11112, 11113): run as root, the suite gives them a network namespace of
their own (``unshare``), where no other server holds those ports, and a mount namespace where /opt is
empty. pip installs offline from a wheelhouse of the checkout's requirements (``PIP_NO_INDEX``,
``PIP_FIND_LINKS``), downloaded once per machine into ~/.cache/qrscp-tests; the virtual environments see
nothing else, so a requirement missing from setup.cfg fails here.
"""
from __future__ import annotations

import configparser
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NoReturn

import pytest
from conftest import ROOT, needs_dcmtk

import qrscp

pytestmark = needs_dcmtk

SYSTEM_PYTHON = "/usr/bin/python3"
#: The file name DCMTK's getscu and storescp give the quick start's image.
IMAGE = "CT.1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
#: The checkout's files a clone does not have.
NOT_IN_A_CLONE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                        ".pytest_cache", ".hypothesis", "storage", "received-*", "bench-results")


def unavailable(reason: str) -> NoReturn:
    """Skip, saying why; in CI, where scripts/test installed everything, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def code_blocks(title: str) -> list[str]:
    """The ``sh`` code blocks of the README section ``## <title>``."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


# --- pip without the network ----------------------------------------------------------------------------------------

def _requirements() -> list[str]:
    """What ``pip install .`` of the checkout installs or builds with: setup.cfg's install_requires, pyproject.toml's
    build requirements, and ``wheel``, which older setuptools ask for."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    install = [line.strip() for line in setup["options"]["install_requires"].splitlines() if line.strip()]
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    return [*install, *build, "wheel"]


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """Wheels of the checkout's requirements for the system Python: from the cache when they are there,
    else downloaded into it once."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        unavailable(f"{SYSTEM_PYTHON} is not installed")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "qrscp-tests", "wheels")
    download = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--dest", str(cache),
                "--only-binary=:all:", "--python-version", version, *_requirements()]
    if subprocess.run([*download, "--no-index", "--find-links", str(cache)], capture_output=True).returncode != 0:
        online = subprocess.run(download, capture_output=True, text=True, timeout=600)
        if online.returncode != 0:
            unavailable(f"cannot download the requirements of the checkout: {online.stderr[-2000:]}")
    return cache


# --- a newcomer at a terminal ---------------------------------------------------------------------------------------

class Output:
    """What a process writes to a pipe, collected by a thread, to be waited for."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.text = ""
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            with self._changed:
                self.text += chunk.decode(errors="replace")
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: text in self.text, timeout):
                raise AssertionError(f"{text!r} never printed; the output:\n{self.text[-3000:]}")


class Newcomer:
    """Someone with a fresh copy of the checkout in ``home``, typing into terminals as ``user`` with the
    environment of a login. When the suite runs as root, every command runs in a network namespace and a
    mount namespace of their own (``unshare``, held by a ``sleep`` and entered with ``nsenter``)."""

    def __init__(self, home: Path, user: pwd.struct_passwd, wheelhouse: Path) -> None:
        self.home = home
        self.user = user
        self.checkout = home / "qrscp"
        shutil.copytree(ROOT, self.checkout, ignore=NOT_IN_A_CLONE)
        shutil.copytree(wheelhouse, home / "wheels")
        (home / "bin").mkdir()
        sudo = home / "bin" / "sudo"   # root's sudo, keeping the environment (a clean Debian has no sudo)
        sudo.write_text('#!/bin/sh\nexec "$@"\n')
        sudo.chmod(0o755)
        if user.pw_uid != os.geteuid():
            for path in [home, *home.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        self.env = {"PATH": (f"{home / 'bin'}:" if user.pw_uid == 0 else "") + "/usr/bin:/bin:/usr/sbin:/sbin",
                    "HOME": str(home), "USER": user.pw_name, "LOGNAME": user.pw_name, "SHELL": "/bin/bash",
                    "LANG": "C.UTF-8", "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
                    "PIP_FIND_LINKS": str(home / "wheels"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        self.terminals: list[subprocess.Popen] = []
        self.holder: subprocess.Popen | None = None
        self.user_switch: list[str] = []
        if os.geteuid() == 0:
            self.holder = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "sleep",
                                            "1800"])
            while os.readlink(f"/proc/{self.holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
                time.sleep(0.01)
            try:
                self.as_root(["ip", "link", "set", "lo", "up"])
            except subprocess.CalledProcessError:
                self.close()
                raise
            if user.pw_uid != 0:
                self.user_switch = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]

    def close(self) -> None:
        """End whatever still runs in the newcomer's terminals, and the namespaces."""
        for terminal in self.terminals:
            if terminal.poll() is None:
                os.killpg(terminal.pid, signal.SIGKILL)
                terminal.wait()
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()

    def _enter(self, cwd: Path) -> list[str]:
        """The command prefix that enters the namespaces (entering a mount namespace moves to its root)."""
        if self.holder is None:
            return []
        return ["nsenter", "--target", str(self.holder.pid), "--net", "--mount", f"--wd={cwd}"]

    def as_root(self, argv: list[str]) -> None:
        """Run ``argv`` as root in the newcomer's namespaces (setting up the machine, not typing)."""
        subprocess.run([*self._enter(Path("/")), *argv], check=True)

    def start(self, command: str, cwd: Path, **options) -> subprocess.Popen:
        """A terminal running ``command`` (bash), in its own process group as a terminal's foreground job."""
        terminal = subprocess.Popen([*self._enter(cwd), *self.user_switch, "bash", "-e", "-c", command], cwd=cwd,
                                    env=self.env, start_new_session=True, **options)
        self.terminals.append(terminal)
        return terminal

    @staticmethod
    def interrupt(terminal: subprocess.Popen) -> None:
        """Ctrl-C: SIGINT to the terminal's foreground job (every process of the group)."""
        try:
            os.killpg(terminal.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def run(self, command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        """Type ``command`` and wait for it: its exit code and output."""
        process = self.start(command, cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = process.communicate(timeout=timeout)[0].decode(errors="replace")
        return subprocess.CompletedProcess(command, process.returncode, output)

    def wait_for_port(self, port: int, terminal: subprocess.Popen, log: Path, timeout: float = 300) -> None:
        """Until something listens on ``port`` (``ss``: no probing connection in the server's log)."""
        deadline = time.monotonic() + timeout
        while not subprocess.run([*self._enter(self.home), "ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                                 env=self.env).stdout.strip():
            assert terminal.poll() is None, f"ended with {terminal.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"nothing listens on {port}:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)


@pytest.fixture(params=["root", "user"])
def newcomer(request: pytest.FixtureRequest, wheelhouse: Path) -> Iterator[Newcomer]:
    """As root: root, and nobody, each in namespaces of their own. As another user: that user, on this
    machine's ports 11112 and 11113 if they are free."""
    for tool in ("ss", "bash"):
        if shutil.which(tool) is None:
            unavailable(f"needs {tool}")
    if os.geteuid() == 0:
        if shutil.which("unshare") is None or shutil.which("nsenter") is None or shutil.which("ip") is None:
            unavailable("needs unshare, nsenter (util-linux) and ip (iproute2)")
        user = pwd.getpwnam("root" if request.param == "root" else "nobody")
    elif request.param == "root":
        pytest.skip("the README as root needs the suite to run as root")
    else:
        user = pwd.getpwuid(os.geteuid())
        busy = [port for port in (11112, 11113) if subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True).stdout.strip()]
        if busy:
            pytest.skip(f"the README's ports {busy} are in use here (as root, the test gets a namespace of its own)")
    home = Path(tempfile.mkdtemp(prefix=f"qrscp-readme-{request.param}-"))
    home.chmod(0o755)
    person = Newcomer(home, user, wheelhouse)
    try:
        yield person
    finally:
        person.close()
        shutil.rmtree(home)


# --- the tests ------------------------------------------------------------------------------------------------------

def test_the_readme_as_written(newcomer: Newcomer) -> None:
    """The set-up's first command serves the shipped configuration; the quick start, typed into a second
    terminal, stores the CT, finds it, fetches it into received-get/ and has it moved into received-move/;
    Ctrl-C stops the server cleanly; "Which dcmqrscp runs" names ours. Then the debugger recipe, and as root
    the systemd installation."""
    server_command = code_blocks("Set-up: two commands")[0].splitlines()[0]
    server_log = newcomer.home / "terminal-1.log"
    with open(server_log, "wb") as log:
        server = newcomer.start(server_command, newcomer.checkout, stdout=log, stderr=subprocess.STDOUT)
    try:
        newcomer.wait_for_port(11112, server, server_log)
        quick_start = newcomer.run(code_blocks("Quick start: store, find, retrieve")[0], newcomer.checkout)
        assert quick_start.returncode == 0, quick_start.stdout
        assert "CompressedSamples^CT1" in quick_start.stdout   # findscu's answer
    finally:
        newcomer.interrupt(server)   # Ctrl-C in the first terminal
        returncode = server.wait(60)
    assert returncode == 0, server_log.read_text()[-3000:]
    for directory in ("received-get", "received-move"):
        assert [path.name for path in (newcomer.checkout / directory).iterdir()] == [IMAGE]
    assert len(list((newcomer.checkout / "storage" / "COMMON").glob("CT_*.dcm"))) == 1
    log = server_log.read_text()
    assert "Get SCP Response" in log and "Move SCP Response" in log and "Traceback" not in log

    which = newcomer.run(f". .venv/bin/activate && {code_blocks('Which `dcmqrscp` runs')[0]}", newcomer.checkout)
    assert which.stdout.splitlines() == [f"{newcomer.checkout}/.venv/bin/dcmqrscp",
                                         f"qrscp {qrscp.__version__}: DCMTK's dcmqrscp reimplemented in Python "
                                         f"(emulates DCMTK {qrscp.DCMTK_VERSION}, options up to 3.7.0)"], which.stdout

    _debugger_recipe(newcomer)
    if newcomer.user.pw_uid == 0 and newcomer.holder is not None:
        _systemd_installation(newcomer)


def _debugger_recipe(newcomer: Newcomer) -> None:
    """The recipe of "Debugging with -s", in the checkout (after the set-up) and in another directory: the
    quick start's C-FIND stops at ``find_responses`` and goes on after ``continue``; ``quit`` ends the
    debugger and the server, after a Ctrl-C or at the breakpoint."""
    command, *typed = code_blocks("Debugging with `-s`")[0].splitlines()
    typed = [line.removeprefix("(Pdb) ") for line in typed]
    find = next(line for line in code_blocks("Quick start: store, find, retrieve")[0].splitlines()
                if line.startswith("/usr/bin/findscu"))
    elsewhere = newcomer.home / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(newcomer.checkout / "dcmqrscp.cfg", elsewhere)
    os.chown(elsewhere, newcomer.user.pw_uid, newcomer.user.pw_gid)
    # in the checkout: continue, then Ctrl-C and quit; elsewhere: quit at the breakpoint
    for directory, at_the_breakpoint in ((newcomer.checkout, "continue"), (elsewhere, "quit")):
        log = directory / "pdb.err"
        with open(log, "wb") as stderr:
            debugger = newcomer.start(f". {newcomer.checkout}/.venv/bin/activate && {command}", directory,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        output = Output(debugger.stdout)
        debugger.stdin.write("".join(line + "\n" for line in typed).encode())
        debugger.stdin.flush()
        newcomer.wait_for_port(11112, debugger, log)
        finding = newcomer.start(find, directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output.wait_for("find_responses()\n-> ")
        assert f"{'qrscp' if directory == newcomer.checkout else 'site-packages'}/qrscp/services/query.py(" \
               in output.text
        debugger.stdin.write(f"{at_the_breakpoint}\n".encode())
        debugger.stdin.flush()
        found = finding.wait(60)
        if at_the_breakpoint == "continue":
            assert found == 0, finding.stdout.read().decode()
            newcomer.interrupt(debugger)
            output.wait_for("Program interrupted")
            debugger.stdin.write(b"quit\n")
        debugger.stdin.close()
        try:
            assert debugger.wait(60) == 0, output.text[-3000:]
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pdb still runs after quit:\n{output.text[-3000:]}\n{log.read_text()[-3000:]}")
        assert "internal error" not in log.read_text()


def _systemd_installation(newcomer: Newcomer) -> None:
    """"Running under systemd" as root: its wheel and virtual environment lines as written (in a mount
    namespace where /opt is empty), then the unit's ExecStart runs qrscp and ``systemd-analyze verify``
    accepts the unit, whose ExecStart exists now."""
    block = code_blocks("Running under systemd")[0]
    installation = [line for line in block.splitlines() if re.search(r"\bpip\b", line)]   # the rest alter the machine
    assert len(installation) == 2, block
    newcomer.as_root(["mount", "-t", "tmpfs", "tmpfs", "/opt"])
    for line in installation:
        result = newcomer.run(f". .venv/bin/activate && {line}", newcomer.checkout)
        assert result.returncode == 0, result.stdout
    unit = newcomer.checkout / "scripts" / "dcmqrscp.service"
    exec_start = re.search(r"^ExecStart=(\S+)", unit.read_text(), re.M).group(1)
    version = newcomer.run(f"{exec_start} --version", newcomer.checkout)
    assert version.stdout.startswith("qrscp "), version.stdout
    if shutil.which("systemd-analyze") is None:
        unavailable("systemd-analyze is not installed (package systemd)")
    verified = newcomer.run(f"systemd-analyze verify {unit}", newcomer.checkout)
    assert (verified.returncode, verified.stdout) == (0, "")


def test_case_counts_are_the_suites() -> None:
    """The Reliability section's "N cases" are what the suite collects (scripts/readme-figures rewrites them)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme-figures"), "--check"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stdout.startswith("0 figures"), result.stdout
