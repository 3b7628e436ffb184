"""Access control of a real server (robustness, item 2): every refusal path, each refused and logged.

* who may associate (docs/configuration.md §4, association.md §1; differences.md #8): an unknown called AE
  title is rejected 1/1/7, a calling AE title or host that is not among the peers of the called AE 1/1/3;
* a read-only storage area (access ``R``): storage contexts are refused, and a C-STORE slipped in on
  another accepted context (or on a C-GET receive context) is answered 0x0124, nothing written;
* C-MOVE destinations (docs/association.md §4): unknown AE, ``-ZA`` (destination must be the caller), ``-ZH`` (same
  host), ``-ZV`` (same vendor) each answer 0xA801, and the allowed destination receives the instances;
* ``+ac``: hosts.allow / hosts.deny decide before a single byte is read (the server runs in a private
  mount namespace where /etc/hosts.allow and /etc/hosts.deny are bind mounts of temporary files);
* areas are separate: nothing stored through one AE title can be found or retrieved through an AE title
  of another area, and nothing is ever written outside the configured areas.

After every test the server still answers a C-ECHO and a C-FIND with the stored data intact.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from conftest import Server, free_port, needs_dcmtk, wait_for_port
from health import (
    assert_healthy,
    echo_ok,
    files_under,
    find_uids,
    indexed_uids,
    log_size,
    store,
)
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from rawpeer import (
    SUCCESS,
    RawPeer,
    associate_rq,
    dataset_bytes,
    instance,
    store_request,
)
from test_retrieve import StorageSCP

from qrscp.dicom import uids
from qrscp.net import pdu

pytestmark = [needs_dcmtk, pytest.mark.filterwarnings("ignore::UserWarning")]

BRANCH = 82
REFUSED_NOT_AUTHORIZED = 0x0124
MOVE_DESTINATION_UNKNOWN = 0xA801
#: A-ASSOCIATE-RJ (result, source, reason): called AE title not recognised / calling AE title not recognised.
BAD_CALLED_AE = (1, 1, 7)
BAD_CALLING_AE = (1, 1, 3)
STUDY = instance(BRANCH, 1, 1).StudyInstanceUID


def access_config(open_area: Path, restricted_area: Path, dest_port: int) -> str:
    """OPEN (any peer) and READONLY share ``open_area``; RESTRICTED admits TRUSTED and FARHOST only.
    DEST and TRUSTED are one vendor; REMOTEDEST is DEST's listener under its IP address."""
    return f"""NetworkTCPPort = {{port}}
MaxPDUSize = 16384
MaxAssociations = 16
HostTable BEGIN
trusted    = (TRUSTED, localhost, {dest_port})
faraway    = (FARHOST, faraway.invalid, 104)
dest       = (DEST, localhost, {dest_port})
remotedest = (REMOTEDEST, 127.0.0.1, {dest_port})
HostTable END
VendorTable BEGIN
"Acme" = trusted, dest
VendorTable END
AETable BEGIN
OPEN       {open_area}       RW (200, 1024mb) ANY
RESTRICTED {restricted_area} RW (200, 1024mb) trusted, faraway
READONLY   {open_area}       R  (200, 1024mb) ANY
AETable END
"""


@dataclass
class Site:
    """A running server with this module's configuration, its areas and a storage SCP called DEST."""

    server: Server
    root: Path
    open_area: Path
    restricted_area: Path
    destination: StorageSCP
    expected: dict[str, set[str]] = field(default_factory=dict)   # called AE title -> instances it must find

    def healthy(self) -> None:
        """Both areas answer C-ECHO and C-FIND with exactly their instances; nothing outside the areas."""
        assert_healthy(self.server, self.open_area, self.expected["OPEN"], called="OPEN")
        assert sorted(find_uids(self.server.port, "READONLY")) == sorted(self.expected["OPEN"])
        assert not echo_ok(self.server.port, "RESTRICTED")   # echoscu's title is no permitted peer
        restricted = sorted(self.expected["RESTRICTED"])
        assert sorted(find_uids(self.server.port, "RESTRICTED", calling="TRUSTED")) == restricted
        assert sorted(indexed_uids(self.restricted_area)) == restricted
        areas = files_under(self.open_area) | files_under(self.restricted_area)
        assert {p for p in files_under(self.root) - areas if p.suffix == ".dcm" or p.name == "index.dat"} == set()


@contextmanager
def running_site(root: Path, *options: str) -> Iterator[Site]:
    """A server with :func:`access_config` (and ``options``), one instance stored through OPEN and one
    through RESTRICTED, and DEST listening."""
    open_area, restricted_area = root / "open", root / "restricted"
    destination = StorageSCP(sop_classes=(CTImageStorage,), ae_title="DEST")
    with destination.running():
        with Server(root, access_config(open_area, restricted_area, destination.port), "-v", *options) as server:
            site = Site(server, root, open_area, restricted_area, destination)
            seeds = {"OPEN": instance(BRANCH, 1, 1), "RESTRICTED": instance(BRANCH, 2, 1)}
            for called, dataset in seeds.items():
                assert store(server.port, [dataset], called=called, calling="TRUSTED") == [SUCCESS]
                site.expected[called] = {str(dataset.SOPInstanceUID)}
            yield site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("access")) as running:
        yield running


@pytest.fixture
def checked(site: Site) -> Iterator[Site]:
    """The module's site, checked healthy after the test."""
    yield site
    site.healthy()


def rejection(port: int, called: str, calling: str) -> tuple[int, int, int] | None:
    """(result, source, reason) of the A-ASSOCIATE-RJ for ``calling`` -> ``called``; None if accepted."""
    with RawPeer(port) as peer:
        answer = peer.associate(associate_rq(called=called, calling=calling, contexts={1: uids.VERIFICATION}))
        assert answer is not None, "connection closed without an answer"
        if answer[0] == pdu.A_ASSOCIATE_AC:
            peer.send(pdu.RELEASE_RQ)
            return None
        assert answer[0] == pdu.A_ASSOCIATE_RJ, answer
        return pdu.decode_associate_rj(answer[1])


# --- who may associate --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("called", ["NOSUCHAE", "open", "OPENX", "OPE", "../OPEN", "OPEN/..", ""])
def test_unknown_called_ae_title_is_rejected(checked: Site, called: str) -> None:
    """A called AE title that is not exactly an AETable title (case, prefix, path characters, empty):
    rejected 1/1/7 and logged."""
    since = log_size(checked.server)
    assert rejection(checked.server.port, called, "TRUSTED") == BAD_CALLED_AE
    checked.server.wait_for_log("Refusing Association (BadAEService)", since)


@pytest.mark.parametrize("calling", ["INTRUDER", "trusted", "TRUSTED2", "FARHOST"])
def test_calling_ae_title_or_host_not_among_the_peers_is_rejected(checked: Site, calling: str) -> None:
    """RESTRICTED admits TRUSTED at localhost and FARHOST at faraway.invalid: another title, a title in
    another case, or FARHOST calling from localhost is rejected 1/1/3 (docs/differences.md #8), and the log says
    who was refused."""
    since = log_size(checked.server)
    assert rejection(checked.server.port, "RESTRICTED", calling) == BAD_CALLING_AE
    log = checked.server.wait_for_log("Refusing Association (BadAEPeer)", since)
    assert f"Peer localhost:{calling} is not permitted to access RESTRICTED" in log


def test_permitted_peer_is_accepted(checked: Site) -> None:
    """TRUSTED calling from localhost, as its peer entry says, is accepted by RESTRICTED."""
    assert rejection(checked.server.port, "RESTRICTED", "TRUSTED") is None


def test_peer_host_is_compared_as_the_address_without_host_lookup(tmp_path: Path) -> None:
    """With ``-dhl`` the peer's presentation address is 127.0.0.1, which the peer entry (localhost) does
    not name: TRUSTED is rejected 1/1/3 (docs/configuration.md §4)."""
    open_area = tmp_path / "open"
    with Server(tmp_path, access_config(open_area, tmp_path / "restricted", free_port()), "-v", "-dhl") as server:
        dataset = instance(BRANCH, 1, 1)
        assert store(server.port, [dataset], called="OPEN") == [SUCCESS]
        since = log_size(server)
        assert rejection(server.port, "RESTRICTED", "TRUSTED") == BAD_CALLING_AE
        server.wait_for_log("Peer 127.0.0.1:TRUSTED is not permitted to access RESTRICTED", since)
        assert_healthy(server, open_area, [str(dataset.SOPInstanceUID)], called="OPEN")


def test_peer_host_name_is_cut_at_its_first_dot_and_an_address_kept_whole(tmp_path: Path) -> None:
    """The peer's reverse-DNS name counts up to its first dot, as DCMTK's (``pacs.example.org`` is ``pacs``);
    an address without a name counts whole (``127.0.0.2``, where DCMTK says ``127``, differences #33)."""
    area = tmp_path / "area"
    config = (f"NetworkTCPPort = {{port}}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
              "HostTable BEGIN\nfar = (FAR, pacs, 104)\nnear = (NEAR, 127.0.0.2, 104)\nHostTable END\n"
              f"AETable BEGIN\nQRSCP {area} RW (200, 1024mb) far, near\nAETable END\n")
    with namespaced_server(tmp_path, config, ("hosts",)) as server:
        server.write("hosts", "127.0.0.1 localhost\n127.0.0.3 pacs.example.org pacs-alias")
        for calling, source, accepted in [("FAR", "127.0.0.3", True), ("NEAR", "127.0.0.2", True),
                                          ("FAR", "127.0.0.2", False), ("NEAR", "127.0.0.3", False)]:
            since = log_size(server)
            ae = AE(ae_title=calling)
            ae.add_requested_context(uids.VERIFICATION)
            association = ae.associate("127.0.0.1", server.port, ae_title="QRSCP", bind_address=(source, 0))
            assert association.is_established == accepted, (calling, source)
            if accepted:
                association.release()
            name = "pacs" if source == "127.0.0.3" else source
            server.wait_for_log(f"Association Received ({name}:{calling} -> QRSCP)", since)


# --- read-only areas ----------------------------------------------------------------------------------------------

def _store_on(port: int, rq: pdu.AssociateRQ, context_id: int) -> tuple[dict[int, str], int | None]:
    """Associate with ``rq``, then C-STORE a new instance on ``context_id`` if it was accepted:
    (accepted contexts, status or None)."""
    dataset = instance(BRANCH, 3, 1)
    with RawPeer(port) as peer:
        accepted = peer.establish(rq)
        if context_id not in accepted:
            return accepted, None
        peer.send_message(context_id, store_request(dataset), dataset_bytes(dataset))
        return accepted, peer.final_response()[0]["Status"]


def test_storage_context_to_a_read_only_area_is_refused(checked: Site) -> None:
    """A CT storage context proposed to READONLY is refused with result 1 (user rejection)."""
    rq = associate_rq(called="READONLY", contexts={1: uids.VERIFICATION, 3: CTImageStorage})
    with RawPeer(checked.server.port) as peer:
        peer.send(pdu.encode_associate_rq(rq))
        answer = peer.read_pdu()
        assert answer is not None and answer[0] == pdu.A_ASSOCIATE_AC
        results = {c.context_id: c.result for c in pdu.decode_associate_ac(answer[1]).contexts}
    assert results == {1: pdu.ACCEPTANCE, 3: pdu.USER_REJECTION}


def test_store_slipped_in_on_another_context_of_a_read_only_area_is_refused(checked: Site) -> None:
    """A C-STORE-RQ sent to READONLY on its accepted Verification context: 0x0124, logged, nothing written."""
    before = files_under(checked.open_area)
    since = log_size(checked.server)
    rq = associate_rq(called="READONLY", contexts={1: uids.VERIFICATION, 3: CTImageStorage})
    accepted, status = _store_on(checked.server.port, rq, 1)
    assert 3 not in accepted
    assert status == REFUSED_NOT_AUTHORIZED
    checked.server.wait_for_log("storage area of READONLY is read-only", since)
    assert files_under(checked.open_area) == before


def test_store_on_a_c_get_receive_context_of_a_read_only_area_is_refused(checked: Site) -> None:
    """A storage context with the requestor in the SCP role only (for C-GET) is accepted by READONLY, but
    a C-STORE-RQ sent on it is answered 0x0124 and nothing is written."""
    before = files_under(checked.open_area)
    rq = associate_rq(called="READONLY", contexts={1: uids.VERIFICATION, 3: CTImageStorage})
    rq.roles = {CTImageStorage: (False, True)}
    accepted, status = _store_on(checked.server.port, rq, 3)
    assert 3 in accepted
    assert status == REFUSED_NOT_AUTHORIZED
    assert files_under(checked.open_area) == before


def test_read_only_area_can_be_read(checked: Site) -> None:
    """READONLY shares OPEN's area: it finds and retrieves what OPEN stored."""
    status, completed = move(checked.server.port, "READONLY", "DEST")
    assert (status, completed) == (SUCCESS, 1)


# --- C-MOVE destinations ------------------------------------------------------------------------------------------

def move(port: int, called: str, destination: str, calling: str = "MOVESCU",
         study: str | None = None) -> tuple[int, int]:
    """A Study Root STUDY-level C-MOVE of ``study`` (default: OPEN's seed study) to ``destination``:
    (final status, completed sub-operations)."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(uids.STUDY_ROOT_MOVE, ExplicitVRLittleEndian)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study or STUDY
    association = ae.associate("127.0.0.1", port, ae_title=called)
    assert association.is_established
    try:
        final = None
        for status, _identifier in association.send_c_move(query, destination, uids.STUDY_ROOT_MOVE):
            assert status is not None and "Status" in status, "C-MOVE without a response"
            final = status
        assert final is not None
        return int(final.Status), int(final.get("NumberOfCompletedSuboperations", 0))
    finally:
        association.release()


def test_move_to_an_unknown_destination_is_refused(checked: Site) -> None:
    since = log_size(checked.server)
    received = len(checked.destination.records)
    assert move(checked.server.port, "OPEN", "NOBODY")[0] == MOVE_DESTINATION_UNKNOWN
    checked.server.wait_for_log("mapMoveDestination: unknown AE: 'NOBODY'", since)
    assert len(checked.destination.records) == received


def test_move_to_a_known_destination_delivers(checked: Site) -> None:
    received = len(checked.destination.records)
    assert move(checked.server.port, "OPEN", "DEST") == (SUCCESS, 1)
    assert [r.sop_instance_uid for r in checked.destination.records[received:]] == sorted(checked.expected["OPEN"])


@pytest.mark.parametrize("option, calling, destination, allowed, logged", [
    ("-ZA", "MOVESCU", "DEST", False, "mapMoveDestination: strictMove Reqs: 'MOVESCU' != 'DEST'"),
    ("-ZA", "DEST", "DEST", True, None),
    ("-ZH", "MOVESCU", "REMOTEDEST", False, "mapMoveDestination: different hosts: 'localhost', '127.0.0.1'"),
    ("-ZH", "MOVESCU", "DEST", True, None),
    ("-ZV", "MOVESCU", "DEST", False, "mapMoveDestination: different vendors: 'MOVESCU', 'DEST'"),
    ("-ZV", "TRUSTED", "DEST", True, None),
], ids=["ZA-other", "ZA-self", "ZH-other-host", "ZH-same-host", "ZV-other-vendor", "ZV-same-vendor"])
def test_move_restrictions(tmp_path: Path, option: str, calling: str, destination: str, allowed: bool,
                           logged: str | None) -> None:
    """``-ZA``, ``-ZH``, ``-ZV``: a destination the restriction forbids gets 0xA801 (logged) and receives
    nothing; the one it allows receives the study."""
    with running_site(tmp_path, option) as site:
        since = log_size(site.server)
        status, completed = move(site.server.port, "OPEN", destination, calling=calling)
        if allowed:
            assert (status, completed) == (SUCCESS, 1)
            assert len(site.destination.records) == 1
        else:
            assert status == MOVE_DESTINATION_UNKNOWN
            site.server.wait_for_log(logged, since)
            assert site.destination.records == []
        site.healthy()


# --- areas are separate -------------------------------------------------------------------------------------------

def test_an_area_is_invisible_through_the_ae_title_of_another(checked: Site) -> None:
    """What OPEN stored cannot be found or moved through RESTRICTED, and the other way round."""
    restricted_study = instance(BRANCH, 2, 1).StudyInstanceUID
    assert find_uids(checked.server.port, "RESTRICTED", calling="TRUSTED", StudyInstanceUID=STUDY) == []
    assert find_uids(checked.server.port, "OPEN", StudyInstanceUID=restricted_study) == []
    assert move(checked.server.port, "RESTRICTED", "DEST", calling="TRUSTED") == (SUCCESS, 0)
    assert move(checked.server.port, "READONLY", "DEST", study=restricted_study) == (SUCCESS, 0)


# --- +ac: hosts.allow and hosts.deny ------------------------------------------------------------------------------

class NamespacedServer(Server):
    """Our server in a private mount namespace where some files under /etc are bind mounts of files in
    ``directory`` (rewrite those to change what the server sees: it reads them for every connection)."""

    def __init__(self, directory: Path, config: str, etc_files: tuple[str, ...], *options: str) -> None:
        # (super().__init__ would start another server)
        self.directory = Path(directory)
        self.port = free_port()
        self.config_path = self.directory / "server.cfg"
        self.config_path.write_text(config.replace("{port}", str(self.port)))
        binds = []
        for name in etc_files:
            (self.directory / name).write_text("")
            binds.append(f'mount --bind "{self.directory / name}" /etc/{name}')
        self.stderr_path, self.stdout_path = self.directory / "qrscp.err", self.directory / "qrscp.out"
        script = " && ".join([*binds, 'exec "$@"'])
        command = ["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "qrscp", "-c",
                   str(self.config_path), "-v", *options, str(self.port)]
        self._stderr = open(self.stderr_path, "wb")
        self._stdout = open(self.stdout_path, "wb")
        self.process = subprocess.Popen(command, cwd=self.directory, stdout=self._stdout, stderr=self._stderr)
        try:
            wait_for_port(self.port, process=self.process)
        except Exception:
            self.stop()
            raise

    def write(self, name: str, text: str) -> None:
        """Replace what the server sees as /etc/``name`` (same file, same inode: the bind mount sees it)."""
        (self.directory / name).write_text(text + "\n" if text else "")


def namespaced_server(directory: Path, config: str, etc_files: tuple[str, ...], *options: str) -> NamespacedServer:
    """A :class:`NamespacedServer`, or a skip where this machine cannot make one."""
    if os.geteuid() != 0 or shutil.which("unshare") is None \
            or not all(Path("/etc", name).exists() for name in etc_files):
        pytest.skip(f"needs root, unshare and {', '.join('/etc/' + name for name in etc_files)}")
    try:
        return NamespacedServer(directory, config, etc_files, *options)
    except (RuntimeError, TimeoutError) as error:
        pytest.skip(f"cannot run the server in a private mount namespace here: {error}")


@pytest.fixture(scope="module")
def wrapped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NamespacedServer, Path, set[str]]]:
    """A server with ``+ac`` whose /etc/hosts.allow and /etc/hosts.deny are the test's."""
    root = tmp_path_factory.mktemp("tcpwrap")
    area = root / "area"
    server = namespaced_server(root, f"NetworkTCPPort = {{port}}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
                                     f"AETable BEGIN\nOPEN {area} RW (200, 1024mb) ANY\nAETable END\n",
                               ("hosts.allow", "hosts.deny"), "+ac")
    with server:
        dataset = instance(BRANCH, 4, 1)
        assert store(server.port, [dataset], called="OPEN") == [SUCCESS]
        yield server, area, {str(dataset.SOPInstanceUID)}


@pytest.mark.parametrize("allow, deny, granted", [
    ("", "ALL: ALL", False),
    ("", "dcmqrscp: 127.0.0.1", False),
    ("", "dcmqrscp: localhost", False),
    ("", "dcmqrscp: 127.0.0.0/255.0.0.0", False),
    ("", "dcmqrscp: ALL: deny", False),
    ("dcmqrscp: 127.0.0.1", "ALL: ALL", True),
    ("", "sshd: ALL", True),
    ("", "dcmqrscp: ALL EXCEPT 127.0.0.1", True),
    ("", "dcmqrscp: 10.0.0.0/8", True),
    ("ALL: ALL: deny", "", False),
])
def test_host_access_rules(wrapped: tuple[NamespacedServer, Path, set[str]], allow: str, deny: str,
                           granted: bool) -> None:
    """``+ac``: a denied host's connection is closed before anything is read (no PDU at all) and the
    refusal logged; a granted host is served."""
    server, area, expected = wrapped
    server.write("hosts.allow", allow)
    server.write("hosts.deny", deny)
    try:
        since = log_size(server)
        with RawPeer(server.port) as peer:
            answer = peer.associate(associate_rq(called="OPEN", contexts={1: uids.VERIFICATION}))
            if granted:
                assert answer is not None and answer[0] == pdu.A_ASSOCIATE_AC
                assert peer.echo_status() == SUCCESS
                peer.send(pdu.RELEASE_RQ)
            else:
                assert answer is None
        if not granted:
            server.wait_for_log("TCP wrapper: denied connection from localhost (127.0.0.1)", since)
            assert not echo_ok(server.port, "OPEN")
    finally:
        server.write("hosts.allow", "")
        server.write("hosts.deny", "")
    assert_healthy(server, area, expected, called="OPEN")
