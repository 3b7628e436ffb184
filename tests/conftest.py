"""Helpers shared by the tests: DCMTK's tools, free ports, running our programs."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
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
