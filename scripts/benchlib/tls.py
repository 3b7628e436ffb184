"""The credentials of the TLS rows, made at run time with the ``openssl`` command: one certification
authority, a key and certificate for the servers (and the C-MOVE receiver), one for the clients.

Every server, client and receiver trusts the authority and requires its peer's certificate, as an archive
that uses TLS for access control would be configured.
"""
from __future__ import annotations

import functools
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: What every certificate is issued for: a day is more than a run takes.
DAYS = "2"
#: Elliptic-curve keys: quick to make, and what a current deployment would use.
KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def have_openssl() -> bool:
    """Whether the ``openssl`` command is installed."""
    return shutil.which("openssl") is not None


@dataclass(frozen=True)
class Credentials:
    """The authority's certificate and the servers' and clients' keys and certificates (PEM files)."""

    authority: Path
    server_key: Path
    server_certificate: Path
    client_key: Path
    client_certificate: Path

    def dcmtk_client_options(self) -> list[str]:
        """The options of a DCMTK client tool (storescu) that connects with the client's credentials."""
        return ["+tls", str(self.client_key), str(self.client_certificate), "+cf", str(self.authority)]

    def dcmtk_server_options(self) -> list[str]:
        """The options of a DCMTK acceptor (dcmqrscp 3.7.0, qrscp, storescp) with the server's credentials."""
        return ["+tls", str(self.server_key), str(self.server_certificate), "+cf", str(self.authority)]

    @functools.cached_property
    def client_context(self) -> ssl.SSLContext:
        """The TLS context of the benchmark's own client (made once per process)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False   # DICOM peers are checked by their certificate, not their name
        context.load_verify_locations(self.authority)
        context.load_cert_chain(self.client_certificate, self.client_key)
        return context


def _openssl(*arguments: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *arguments], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {arguments[0]} failed: {result.stderr.strip()[-300:]}")


def make_credentials(directory: Path) -> Credentials:
    """A new authority and the server and client credentials it signs, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS,
             "-subj", "/CN=qrscp bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    for name in ("server", "client"):
        _openssl("req", *KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=bench {name}",
                 cwd=directory)
        (directory / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,"
                                               "IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", DAYS, "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=directory)
    return Credentials(directory / "ca.pem", directory / "server.key", directory / "server.pem",
                       directory / "client.key", directory / "client.pem")
