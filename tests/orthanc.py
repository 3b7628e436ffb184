"""Orthanc (Debian's package) as a real peer of the tests: a DICOM client and server driven through its REST API.

``Orthanc(directory, modalities={...})`` starts one on free ports of 127.0.0.1 with its database in
``directory``; ``query(...)`` runs a C-FIND against one of its modalities. Tests that need it skip where it
is not installed (``scripts/test`` installs it).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import dcmtk_env, free_port, wait_for_port

BINARY = shutil.which("Orthanc") or next((path for path in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
                                          if Path(path).exists()), None)
needs_orthanc = pytest.mark.skipif(BINARY is None, reason="Orthanc is not installed")


class Orthanc:
    """An Orthanc process; ``modalities`` maps a name to (AE title, port) of peers on 127.0.0.1."""

    def __init__(self, directory: Path, modalities: dict[str, tuple[str, int]], ae_title: str = "ORTHANC",
                 **settings: object) -> None:
        assert BINARY is not None
        self.directory = Path(directory)
        self.http_port, self.dicom_port = free_port(), free_port()
        config = {
            "Name": "qrscp-test", "StorageDirectory": str(self.directory / "db"),
            "IndexDirectory": str(self.directory / "db"), "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "DicomAet": ae_title, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "HttpServerEnabled": True, "Plugins": [],
            "DicomModalities": {name: [title, "127.0.0.1", port] for name, (title, port) in modalities.items()},
            **settings,
        }
        self.config_path = self.directory / "orthanc.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = self.directory / "orthanc.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([BINARY, str(self.config_path)], cwd=self.directory, env=dcmtk_env(),
                                            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.http_port, process=self.process)
            wait_for_port(self.dicom_port, process=self.process)
        except Exception:
            self.stop()
            raise

    def request(self, method: str, path: str, body: object = None) -> object:
        """A REST call; the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def query(self, modality: str, level: str, keys: dict[str, str]) -> list[dict[str, object]]:
        """A C-FIND to ``modality``: the answers' tags (``simplify``: keyword -> value)."""
        started = self.request("POST", f"/modalities/{modality}/query", {"Level": level, "Query": keys})
        return self.request("GET", f"{started['Path']}/answers?expand&simplify")  # type: ignore[index,return-value]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Orthanc:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_for_api(orthanc: Orthanc, timeout: float = 15.0) -> None:
    """Block until Orthanc's REST API answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            orthanc.request("GET", "/system")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
