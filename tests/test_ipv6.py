"""IPv6 (DCMTK 3.7.0's ``-i4``, ``-i6``, ``-i0``) on ::1, driven by pynetdicom (DCMTK 3.6.7's clients speak
IPv4 only): listening, peer names and HostTable matching, C-MOVE destinations over IPv6."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import Server, simple_config
from corpus import make_ct, uid
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelMove, Verification
from test_retrieve import StorageSCP

from qrscp.net.acse import peer_name


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_ipv6(), reason="this machine has no IPv6 loopback (::1)")
BRANCH = 76


def echo(host: str, port: int, calling: str = "PYSCU") -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    association = ae.associate(host, port, ae_title="QRSCP")
    if not association.is_established:
        return False
    association.send_c_echo()
    association.release()
    return True


def test_ipv6_only(tmp_path: Path) -> None:
    """``-i6``: served on ::1, not on 127.0.0.1; the peer is logged by its name, or as ``::1`` without one."""
    config = simple_config({"QRSCP": f"{tmp_path / 'area'} RW (200, 1024mb) ANY"})
    with Server(tmp_path, config, "-v", "-i6", host="::1") as server:
        assert echo("::1", server.port)
        assert f"I: Association Received ({peer_name('::1', True)}:PYSCU -> QRSCP)" in \
            server.wait_for_log("Association Received")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5)


def test_dual_stack(tmp_path: Path) -> None:
    """``-i0``: both families on one port; an IPv4 peer is known by its IPv4 name (``localhost``), not by
    the mapped ``::ffff:127`` DCMTK would log (differences #34)."""
    config = simple_config({"QRSCP": f"{tmp_path / 'area'} RW (200, 1024mb) ANY"})
    with Server(tmp_path, config, "-v", "-i0", host="::1") as server:
        assert echo("::1", server.port, "SIX")
        assert echo("127.0.0.1", server.port, "FOUR")
        log = server.wait_for_log("FOUR -> QRSCP")
        assert f"I: Association Received ({peer_name('::1', True)}:SIX -> QRSCP)" in log
        assert "I: Association Received (localhost:FOUR -> QRSCP)" in log


def test_host_table_with_an_ipv6_address(tmp_path: Path) -> None:
    """A peer listed by its IPv6 address (compared as text, with ``-dhl`` as with IPv4) is admitted from ::1
    only; from 127.0.0.1 the same AE title is rejected."""
    config = simple_config({"QRSCP": f"{tmp_path / 'area'} RW (200, 1024mb) six"},
                           host_table="six = (PYSCU, ::1, 104)")
    with Server(tmp_path, config, "-v", "-i0", "-dhl", host="::1") as server:
        assert echo("::1", server.port)
        assert not echo("127.0.0.1", server.port)
        assert "Peer 127.0.0.1:PYSCU is not permitted to access QRSCP" in server.wait_for_log("not permitted")


@pytest.mark.parametrize("family, delivered", [("-i6", True), ("-i0", True), ("-i4", False)])
def test_move_to_an_ipv6_destination(tmp_path: Path, family: str, delivered: bool) -> None:
    """A destination at ::1 is reached over IPv6 with ``-i6`` and ``-i0``; with ``-i4`` it is an unknown
    host, as in DCMTK 3.7.0 (outgoing connections use the server's family)."""
    area = tmp_path / "area"
    destination = StorageSCP(sop_classes=(CTImageStorage,), host="::1")
    with destination.running():
        config = simple_config({"QRSCP": f"{area} RW (200, 1024mb) ANY"},
                               host_table=f"DEST = (DEST, ::1, {destination.port})")
        with Server(tmp_path, config, "-v", family, host="127.0.0.1" if family == "-i4" else "::1") as server:
            host = "127.0.0.1" if family == "-i4" else "::1"
            ae = AE(ae_title="MOVER")
            ae.add_requested_context(CTImageStorage)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            association = ae.associate(host, server.port, ae_title="QRSCP")
            dataset = make_ct(StudyInstanceUID=uid(BRANCH, 1), SeriesInstanceUID=uid(BRANCH, 1, 1),
                              SOPInstanceUID=uid(BRANCH, 1, 1, 1))
            assert association.send_c_store(dataset).Status == 0
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = uid(BRANCH, 1)
            statuses = [status.Status for status, _ in association.send_c_move(
                identifier, "DEST", StudyRootQueryRetrieveInformationModelMove)]
            association.release()
            if delivered:
                assert statuses[-1] == 0 and [record.sop_instance_uid for record in destination.records] == \
                    [uid(BRANCH, 1, 1, 1)]
            else:
                assert statuses == [0xA702] and not destination.records
                assert "E: moveSCP: Sub-Association Request Failed: 0006:0320 Attempt to connect to unknown host: ::1" \
                    in server.wait_for_log("unknown host")

