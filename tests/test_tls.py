"""TLS (``+tls`` and DCMTK 3.7.0's TLS options) with real clients: DCMTK 3.6.7's ``echoscu``, ``storescu``,
``findscu`` and ``storescp`` (which take ``+tls``), pynetdicom (``tls_args``) for C-GET and C-MOVE.

Certificates are made at test time (tests/pki.py). Every refusal ends that connection only: the log says why
(and names the certificate the peer sent), and the server goes on serving.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from conftest import ROOT, Server, free_port, needs_dcmtk, run_dcmtk, run_qrscp, simple_config
from corpus import make_ct, uid, write_instance
from pki import PKI, Identity
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from test_retrieve import StorageSCP, storescp

from qrscp.net import tls

pytestmark = needs_dcmtk
BRANCH = 77
STUDY = uid(BRANCH, 1)


class Credentials:
    """The certificates of these tests."""

    def __init__(self, directory: Path) -> None:
        self.ca = PKI(directory)
        self.server = self.ca.issue("server")
        self.client = self.ca.issue("client")
        self.destination = self.ca.issue("destination")
        self.rogue = self.ca.issue("rogue", self_signed=True)
        self.expired = self.ca.issue("expired", expired=True)
        self.revoked = self.ca.issue("revoked")
        self.crl = self.ca.revocation_list(self.revoked)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return Credentials(tmp_path_factory.mktemp("pki"))


def tls_options(identity: Identity, ca: PKI, *more: str) -> tuple[str, ...]:
    """``+tls key cert +cf ca`` as every DCMTK tool takes it."""
    return ("+tls", str(identity.key), str(identity.cert), "+cf", str(ca.cert), *more)


def client_context(pki: Credentials, identity: Identity | None, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A pynetdicom client's context: trusts the CA, shows ``identity`` (if any)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(str(pki.ca.cert))
    if identity is not None:
        context.load_cert_chain(str(identity.cert), str(identity.key))
    if maximum is not None:
        context.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():   # an old protocol on purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = maximum
    return context


def pynetdicom_echo(port: int, context: ssl.SSLContext, server_name: str = "") -> bool:
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", port, ae_title="QRSCP", tls_args=(context, server_name or None))
    if not association.is_established:
        return False
    status = association.send_c_echo()
    association.release()
    return status.Status == 0


def dcmtk_echo(port: int, *options: str) -> bool:
    result = run_dcmtk("echoscu", "-aec", "QRSCP", *options, "127.0.0.1", str(port))
    return result.returncode == 0 and b"E: " not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pki: Credentials) -> Server:
    """Our server with ``+tls`` (default profile, peer certificates required), -ta 2, storing a CT study
    over TLS with DCMTK's storescu."""
    root = tmp_path_factory.mktemp("tls-server")
    (root / "area").mkdir()
    config = simple_config({"QRSCP": f"{root / 'area'} RW (200, 1024mb) ANY"})
    server = Server(root, config, "-d", "-ta", "2", *tls_options(pki.server, pki.ca))
    with server:
        files = [write_instance(make_ct(StudyInstanceUID=STUDY, SeriesInstanceUID=uid(BRANCH, 1, 1),
                                        SOPInstanceUID=uid(BRANCH, 1, 1, n), PatientID="TLS1",
                                        PatientName="Secure^Sam"), root / f"{n}.dcm") for n in (1, 2)]
        result = run_dcmtk("storescu", "-aec", "QRSCP", *tls_options(pki.client, pki.ca), "127.0.0.1",
                           str(server.port), *map(str, files))
        assert result.returncode == 0 and b"E: " not in result.stdout + result.stderr, result.stderr.decode()
        yield server


def test_dcmtk_clients_echo_store_and_find_over_tls(served: Server, pki: Credentials) -> None:
    """DCMTK 3.6.7's clients with ``+tls``: the stored study is found, and the debug log shows the client's
    certificate as DCMTK's does."""
    assert dcmtk_echo(served.port, *tls_options(pki.client, pki.ca))
    result = run_dcmtk("findscu", "-S", "-aec", "QRSCP", *tls_options(pki.client, pki.ca), "-k",
                       "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientName", "127.0.0.1",
                       str(served.port))
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0 and STUDY in output and "Secure^Sam" in output, output
    log = served.log
    for line in ("D: ================== BEGIN TLS CONNECTION DETAILS =================",
                 "D: Transport connection: TLS over TCP/IP", "D:   Subject     : /O=qrscp tests/CN=client",
                 "D:   Issued by   : /O=qrscp tests/CN=qrscp test CA", "D:   Public key  : RSA, 2048 bits"):
        assert line in log


def test_get_and_move_over_tls_sub_associations_included(served: Server, pki: Credentials, tmp_path: Path) -> None:
    """pynetdicom's C-GET over TLS; a C-MOVE whose sub-association to DCMTK's ``storescp +tls`` is TLS too,
    with our certificate as the client certificate."""
    context = client_context(pki, pki.client)
    received = []
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_requested_context(CTImageStorage)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = STUDY

    def on_store(event) -> int:
        received.append(event.request.AffectedSOPInstanceUID)
        return 0

    association = ae.associate("127.0.0.1", served.port, ae_title="QRSCP", tls_args=(context, None),
                               ext_neg=[build_role(CTImageStorage, scp_role=True)],
                               evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert association.is_established
    statuses = [status.Status for status, _ in association.send_c_get(identifier,
                                                                      StudyRootQueryRetrieveInformationModelGet)]
    association.release()
    assert statuses[-1] == 0 and sorted(received) == [uid(BRANCH, 1, 1, 1), uid(BRANCH, 1, 1, 2)]

    with storescp(tmp_path / "received", *tls_options(pki.destination, pki.ca)) as port:
        config = served.config_path.read_text()
        served.config_path.write_text(config.replace("AETable BEGIN", f"HostTable BEGIN\nDEST = (DEST, 127.0.0.1, "
                                                                      f"{port})\nHostTable END\nAETable BEGIN"))
        since = len(served.log)
        served.process.send_signal(1)   # SIGHUP: the destination is read for the next association
        served.wait_for_log("re-read configuration file", since)
        association = ae.associate("127.0.0.1", served.port, ae_title="QRSCP", tls_args=(context, None))
        statuses = [status.Status for status, _ in association.send_c_move(
            identifier, "DEST", StudyRootQueryRetrieveInformationModelMove)]
        association.release()
    assert statuses[-1] == 0, served.log[-2000:]
    assert len(list((tmp_path / "received").glob("CT.*"))) == 2


def test_move_to_a_destination_without_tls_fails_that_sub_association_only(served: Server, pki: Credentials,
                                                                            tmp_path: Path) -> None:
    """A TLS server reaches its destinations over TLS only (as DCMTK 3.7.0): a plain storescp gets no
    instance, the C-MOVE fails 0xA702 with the TLS error logged, and the server goes on."""
    with storescp(tmp_path / "received") as port:
        config = served.config_path.read_text().split("HostTable BEGIN")[0]
        rest = served.config_path.read_text().split("AETable BEGIN")[1]
        served.config_path.write_text(f"{config}HostTable BEGIN\nDEST = (DEST, 127.0.0.1, {port})\nHostTable END\n"
                                      f"AETable BEGIN{rest}")
        since = len(served.log)
        served.process.send_signal(1)
        served.wait_for_log("re-read configuration file", since)
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = STUDY
        association = ae.associate("127.0.0.1", served.port, ae_title="QRSCP",
                                   tls_args=(client_context(pki, pki.client), None))
        statuses = [status.Status for status, _ in association.send_c_move(
            identifier, "DEST", StudyRootQueryRetrieveInformationModelMove)]
        association.release()
    assert statuses == [0xA702]
    assert "E: moveSCP: Sub-Association Request Failed: 000b:" in served.wait_for_log("Sub-Association", since)
    assert not list((tmp_path / "received").glob("CT.*"))
    assert dcmtk_echo(served.port, *tls_options(pki.client, pki.ca))


REFUSALS = {
    "plain DICOM": ("000b:090b TLS error: wrong version number", None),
    "self-signed": ("000b:0886 TLS error: certificate verify failed (self-signed certificate) "
                    "(peer certificate: /O=qrscp tests/CN=rogue)", "rogue"),
    "expired": ("000b:0886 TLS error: certificate verify failed (certificate has expired) "
                "(peer certificate: /O=qrscp tests/CN=expired)", "expired"),
    "no certificate": ("000b:08c7 TLS error: peer did not return a certificate", ""),
    "TLS 1.1": ("000b:0902 TLS error: unsupported protocol", "client"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_peers_end_only_their_connection(served: Server, pki: Credentials, case: str) -> None:
    """A plain client on the TLS port, an untrusted, expired or missing client certificate, a protocol
    version the profile forbids: each connection ends, the log says why, the server goes on."""
    expected, who = REFUSALS[case]
    since = len(served.log)
    if who is None:
        assert not dcmtk_echo(served.port)
    else:
        identity = getattr(pki, who) if who else None
        maximum = ssl.TLSVersion.TLSv1_1 if case == "TLS 1.1" else None  # noqa: deprecated on purpose
        try:
            established = pynetdicom_echo(served.port, client_context(pki, identity, maximum))
        except (OSError, ssl.SSLError):
            established = False
        assert not established
    assert f"I: Failed to receive association: {expected}" in served.wait_for_log("Failed to receive", since)
    assert dcmtk_echo(served.port, *tls_options(pki.client, pki.ca))


def test_stalled_handshake_is_bounded_by_the_acse_timeout_and_stalls_nobody(served: Server,
                                                                             pki: Credentials) -> None:
    """A peer that connects and never says a word: others are served meanwhile; after ``-ta`` (2 s) its
    connection is closed and the timeout logged."""
    since = len(served.log)
    with socket.create_connection(("127.0.0.1", served.port)) as silent:
        assert dcmtk_echo(served.port, *tls_options(pki.client, pki.ca))
        silent.settimeout(30)
        assert silent.recv(100) == b""   # closed by the server
    assert "the TLS handshake timed out" in served.wait_for_log("Failed to receive", since)


@pytest.mark.parametrize("mode, accepted", [("-vc", {"client", "none"}), ("-ic", {"client", "none", "rogue"})])
def test_peer_certificate_modes(tmp_path: Path, pki: Credentials, mode: str, accepted: set[str]) -> None:
    """``-vc``: a certificate is verified if sent, none is fine; ``-ic``: nothing is verified."""
    config = simple_config({"QRSCP": f"{tmp_path / 'area'} RW (200, 1024mb) ANY"})
    with Server(tmp_path, config, mode, *tls_options(pki.server, pki.ca)) as server:
        outcome = {name: pynetdicom_echo(server.port, client_context(pki, getattr(pki, name) if name != "none"
                                                                     else None))
                   for name in ("client", "none", "rogue")}
    assert {name for name, ok in outcome.items() if ok} == accepted


@pytest.mark.parametrize("encoding", ["PEM", "DER"])
def test_revoked_client_certificate_is_refused_with_a_crl(tmp_path: Path, pki: Credentials, encoding: str) -> None:
    """``+crl``: a revoked client certificate is refused, from a PEM or (``-der``) a DER list."""
    config = simple_config({"QRSCP": f"{tmp_path / 'area'} RW (200, 1024mb) ANY"})
    if encoding == "PEM":
        options = tls_options(pki.server, pki.ca, "+crl", str(pki.crl))
    else:
        identity = pki.ca.issue("server-der", der=True)
        crl = tmp_path / "revoked.crl"
        crl.write_bytes(x509.load_pem_x509_crl(pki.crl.read_bytes()).public_bytes(serialization.Encoding.DER))
        options = ("+tls", str(identity.key), str(identity.cert), "-der", "+cf", str(pki.ca.cert_der),
                   "+crl", str(crl))
    with Server(tmp_path, config, "-v", *options) as server:
        assert pynetdicom_echo(server.port, client_context(pki, pki.client))
        assert not pynetdicom_echo(server.port, client_context(pki, pki.revoked))
        assert "certificate verify failed (certificate revoked) (peer certificate: /O=qrscp tests/CN=revoked)" \
            in server.wait_for_log("revoked")


def test_expected_server_name(tmp_path: Path, pki: Credentials) -> None:
    """``--expect-sni``: a client asking for another server name is refused; one asking for none is served."""
    config = simple_config({"QRSCP": f"{tmp_path / 'area'} RW (200, 1024mb) ANY"})
    with Server(tmp_path, config, "-v", "--expect-sni", "archive.test",
                *tls_options(pki.server, pki.ca)) as server:
        context = client_context(pki, pki.client)
        assert pynetdicom_echo(server.port, context, "archive.test")
        assert pynetdicom_echo(server.port, context)
        assert not pynetdicom_echo(server.port, context, "other.test")
        assert "E: SNI failure: client requested server 'other.test', my name is 'archive.test'." in \
            server.wait_for_log("SNI failure")


@pytest.mark.parametrize("profile, protocol", [("+pg", "TLSv1.3"), ("+pz", "TLSv1.2"), ("+py", "TLSv1.3")])
def test_profiles_negotiate_their_protocol(tmp_path: Path, pki: Credentials, profile: str, protocol: str) -> None:
    config = simple_config({"QRSCP": f"{tmp_path / 'area'} RW (200, 1024mb) ANY"})
    with Server(tmp_path, config, "-d", profile, *tls_options(pki.server, pki.ca)) as server:
        assert dcmtk_echo(server.port, *tls_options(pki.client, pki.ca))
        assert f"D:   Protocol    : {protocol}" in server.wait_for_log("Protocol")


def test_encrypted_and_der_keys_and_chain_files(tmp_path: Path, pki: Credentials) -> None:
    """``+pw``: an encrypted private key; ``-der``: key and certificate in DER; a certificate file that holds
    the chain (ours, then the CA's)."""
    encrypted = pki.ca.issue("locked", password=b"s3cret")
    der = pki.ca.issue("binary", der=True)
    chain = tmp_path / "fullchain.pem"
    chain.write_bytes(b"issued to the archive\n" + pki.server.cert.read_bytes() + pki.ca.cert.read_bytes())
    config = simple_config({"QRSCP": f"{tmp_path / 'area'} RW (200, 1024mb) ANY"})
    for options in (("+tls", str(encrypted.key), str(encrypted.cert), "+pw", "s3cret", "+cf", str(pki.ca.cert)),
                    ("+tls", str(der.key), str(der.cert), "-der", "+cf", str(pki.ca.cert_der)),
                    ("+tls", str(pki.server.key), str(chain), "+cf", str(pki.ca.cert))):
        with Server(tmp_path, config, *options) as server:
            assert dcmtk_echo(server.port, *tls_options(pki.client, pki.ca)), server.log


def _start(tmp_path: Path, *options: str):
    config = tmp_path / "server.cfg"
    config.write_text(simple_config({"QRSCP": f"{tmp_path / 'area'} RW (200, 1024mb) ANY"})
                      .replace("{port}", str(free_port())))
    return run_qrscp("-c", str(config), *options, cwd=tmp_path, timeout=30)


def test_start_up_problems_are_fatal_with_dcmtks_messages(tmp_path: Path, pki: Credentials) -> None:
    """Exit code 10 and DCMTK 3.7.0's fatal lines, after the port was bound (DCMTK's order)."""
    short = pki.ca.issue("short", key_size=1024)
    locked = pki.ca.issue("locked2", password=b"pw")
    cases = [
        (("+tls", str(tmp_path / "none.pem"), str(pki.server.cert)),
         f"F: 000b:0004 Unable to load private TLS key from '{tmp_path / 'none.pem'}'"),
        (("+tls", str(pki.server.key), str(tmp_path / "none.pem")),
         f"F: 000b:0005 Unable to load certificate from '{tmp_path / 'none.pem'}'"),
        (("+tls", str(pki.client.key), str(pki.server.cert)),
         f"F: 000b:0006 Private key '{pki.client.key}' and certificate '{pki.server.cert}' do not match"),
        (("+tls", str(short.key), str(short.cert)),
         f"F: Key length of RSA public key too short: RFC 9325 requires at least 2048 bits for server RSA keys, "
         f"but the key in certificate file '{short.cert}' is only 1024 bits."),
        (("+tls", str(locked.key), str(locked.cert), "-pw"), f"F: 000b:0004 Unable to load private TLS key from "
                                                             f"'{locked.key}'"),
        (("+tls", str(pki.server.key), str(pki.server.cert), "+cs", "TLS_NO_SUCH_SUITE"),
         "F: 000b:0003 Unknown or invalid ciphersuite: TLS_NO_SUCH_SUITE"),
        (("+tls", str(pki.server.key), str(pki.server.cert), "+cs", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
         "F: Ciphersuite 'TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA' using SHA-1 MAC not permitted with security profile "
         "'BCP 195 RFC 8996 TLS Profile'"),
        (("+tls", str(pki.server.key), str(pki.server.cert), "+pm", "+cs", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
         "F: Additional ciphersuites not permitted with security profile 'Modified BCP 195 RFC 8996 TLS Profile'"),
    ]
    for options, message in cases:
        result = _start(tmp_path, *options)
        assert result.returncode == 10 and message in result.stderr.decode(), (options, result.stderr.decode())


def test_retired_profile_warns_about_a_short_key_and_serves(tmp_path: Path, pki: Credentials) -> None:
    short = pki.ca.issue("short2", key_size=1024)
    config = simple_config({"QRSCP": f"{tmp_path / 'area'} RW (200, 1024mb) ANY"})
    with Server(tmp_path, config, "+px", "+tls", str(short.key), str(short.cert), "+cf", str(pki.ca.cert)) as server:
        assert dcmtk_echo(server.port, *tls_options(pki.client, pki.ca, "+px"))
        assert f"W: Key length of RSA public key too short: RFC 9325 recommends at least 2048 bits for RSA keys, but " \
               f"the key in certificate file '{short.cert}' is only 1024 bits." in server.log


def test_list_ciphers_and_profiles(tmp_path: Path) -> None:
    """``+cc`` and ``+ph``: DCMTK's lists for the linked OpenSSL, exit code 0."""
    result = run_qrscp("+cc", cwd=tmp_path)
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0 and "Supported TLS ciphersuites are:" in lines
    listed = lines[lines.index("Supported TLS ciphersuites are:") + 1:]
    assert listed == [f"  {suite.iana_name}" for suite in tls.supported_ciphersuites()]
    assert "  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" in listed
    result = run_qrscp("--list-profiles", cwd=tmp_path)
    output = result.stdout.decode()
    assert result.returncode == 0
    assert "\nSupported TLS Secure Transport Connection Profiles are:\n- BCP 195 RFC 8996 TLS Profile (default)\n" \
           "- Modified BCP 195 RFC 8996 TLS Profile\n" in output
    assert f"Cryptographic algorithms implemented by: {ssl.OPENSSL_VERSION}" in output


@pytest.mark.parametrize("arguments, message", [
    (("+cf", "ca.pem"), "--add-cert-file only allowed with --enable-tls"),
    (("-ic",), "--ignore-peer-cert only allowed with --enable-tls"),
    (("+pa",), "--profile-basic only allowed with --enable-tls"),
    (("+tls", "k", "c", "+ws"), "--write-seed only allowed with --seed"),
    (("+tls", "k", "c", "+pz", "+cs", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
     "--cipher not allowed with --profile-bcp195-ex"),
    (("--expect-sni", "a", "--no-sni"), "--no-sni not allowed with --expect-sni"),
])
def test_tls_option_checks(tmp_path: Path, arguments: tuple[str, ...], message: str) -> None:
    """DCMTK 3.7.0's dependence and conflict checks of the TLS options: exit code 1."""
    result = run_qrscp(*arguments, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.decode().endswith(f"error: {message}\n")


def test_readme_tls_example_runs_as_written(tmp_path: Path) -> None:
    """The README's worked example, in a scratch directory with the shipped configuration (its ports moved to
    free ones): the CT image arrives at the TLS receiver."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## TLS and IPv6"):]
    script = section[section.index("```sh\n") + 6:section.index("\n```\n")]
    archive, receiver = free_port(), free_port()
    script = script.replace("11112", str(archive)).replace("11113", str(receiver))
    config = (ROOT / "dcmqrscp.cfg").read_text().replace("11112", str(archive)).replace("11113", str(receiver))
    (tmp_path / "dcmqrscp.cfg").write_text(config)
    environment = dict(os.environ, F=get_testdata_file("CT_small.dcm"),
                       PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    process = subprocess.Popen(["bash", "-e", "-c", script], cwd=tmp_path, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output = process.communicate(timeout=120)[0].decode(errors="replace")
    finally:   # the example's background servers too, whatever happened
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait()
    assert process.returncode == 0, output
    assert "0]" in output and list((tmp_path / "received-tls").glob("CT.*")), output
