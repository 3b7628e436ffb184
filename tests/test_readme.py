"""The README's quick start, run exactly as written against a server on the shipped configuration."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, needs_dcmtk, wait_for_port

pytestmark = needs_dcmtk


def _quick_start_commands() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_quick_start_runs_as_written(tmp_path):
    if not (_port_free(11112) and _port_free(11113)):
        pytest.skip("the README's ports 11112/11113 are in use on this machine")
    shutil.copy(ROOT / "dcmqrscp.cfg", tmp_path / "dcmqrscp.cfg")
    with open(tmp_path / "server.err", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "qrscp", "-v"], cwd=tmp_path, stderr=log)
    try:
        wait_for_port(11112, process=server)
        result = subprocess.run(["bash", "-e", "-c", _quick_start_commands()], cwd=tmp_path,
                                capture_output=True, timeout=120)
        assert result.returncode == 0, result.stderr.decode()
        assert b"CompressedSamples^CT1" in result.stderr + result.stdout  # findscu showed the patient
        received = list((tmp_path / "received").iterdir())
        assert received and all(path.name.startswith("CT.") for path in received)
    finally:
        server.terminate()
        assert server.wait(30) == 0
    server_log = (tmp_path / "server.err").read_text()
    assert "Move SCP Response" in server_log and "Get SCP Response" in server_log
    assert list((tmp_path / "storage" / "COMMON").glob("CT_*.dcm"))
