"""Association establishment (ACSE, PS3.8 §7.1): the acceptor's A-ASSOCIATE exchange and the requestor's.

What to accept is decided by :mod:`qrscp.server.policy`; this module only speaks the protocol.
"""
from __future__ import annotations

import socket
import ssl

from qrscp import log
from qrscp.dicom import uids
from qrscp.net import pdu, tls, transport
from qrscp.net.association import AcceptedContext, Association
from qrscp.net.pdu import (
    AssociateAC,
    AssociateRQ,
    PresentationContextAC,
    PresentationContextRQ,
)
from qrscp.net.transport import Transport

LOG = log.get_logger(log.NET)


class AssociationRejected(Exception):
    """The peer rejected our A-ASSOCIATE-RQ."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        super().__init__(f"Association Rejected: result {result}, source {source}, reason {reason}")
        self.result, self.source, self.reason = result, source, reason


class AssociationFailed(Exception):
    """The peer answered our A-ASSOCIATE-RQ with something other than an accept or reject."""


class UnexpectedPDU(pdu.PDUError):
    """A connection opened with a PDU other than an A-ASSOCIATE-RQ."""

    def __init__(self, pdu_type: int) -> None:
        super().__init__(f"0006:0303 expected an A-ASSOCIATE-RQ PDU, got {pdu.PDU_NAMES[pdu_type]}")
        self.pdu_type = pdu_type


def read_associate_rq(conn: Transport, timeout: float | None) -> AssociateRQ:
    """Read the A-ASSOCIATE-RQ that opens an incoming association.

    Another first PDU is met as DCMTK meets it: a known kind gets an A-ABORT (an A-ABORT gets nothing), an
    unknown type or an over-long request gets nothing at all; the rest of it is left unread, so that
    closing the connection then resets it. Raises :class:`pdu.PDUError` (:class:`UnexpectedPDU`,
    :class:`pdu.UnknownPDUType`, :class:`pdu.PDUTooLarge`, or a malformed request),
    :class:`transport.TransportClosed` or :class:`TimeoutError`.
    """
    pdu_type, length = conn.read_pdu_header(timeout, exact=True)
    if pdu_type not in pdu.PDU_NAMES:
        raise pdu.UnknownPDUType(pdu_type)
    if pdu_type != pdu.A_ASSOCIATE_RQ:
        if pdu_type != pdu.A_ABORT:
            try:
                conn.send(pdu.encode_abort())
            except OSError:
                pass
        raise UnexpectedPDU(pdu_type)
    if length > pdu.MAX_ASSOCIATE_PDU:
        LOG.error("A-ASSOCIATE PDU too large: %d bytes, refusing.", length)
        raise pdu.PDUTooLarge(pdu_type, length, pdu.MAX_ASSOCIATE_PDU)
    return pdu.decode_associate_rq(conn.read_pdu_body(length, exact=True))


def send_reject(conn: Transport, result: int, source: int, reason: int) -> None:
    """Send an A-ASSOCIATE-RJ and close the connection."""
    try:
        conn.send(pdu.encode_associate_rj(result, source, reason))
    except OSError:
        pass
    conn.close()


def send_accept(conn: Transport, rq: AssociateRQ, results: list[PresentationContextAC],
                roles: dict[str, tuple[bool, bool]], max_receive_pdu: int, peer_host: str,
                acse_timeout: float | None) -> Association:
    """Send the A-ASSOCIATE-AC for ``rq`` and return the established association."""
    ac = AssociateAC(
        called_ae_title=rq.called_ae_title, calling_ae_title=rq.calling_ae_title, contexts=results,
        application_context=uids.APPLICATION_CONTEXT, max_pdu_length=max_receive_pdu,
        implementation_class_uid=uids.IMPLEMENTATION_CLASS_UID,
        implementation_version_name=uids.IMPLEMENTATION_VERSION_NAME, roles=roles)
    conn.send(pdu.encode_associate_ac(ac))
    proposed = {context.context_id: context.abstract_syntax for context in rq.contexts}
    accepted = {}
    for result in results:
        if result.result != pdu.ACCEPTANCE:
            continue
        abstract_syntax = proposed[result.context_id]
        scu, scp = roles.get(abstract_syntax, (True, False))
        accepted[result.context_id] = AcceptedContext(result.context_id, abstract_syntax,
                                                      result.transfer_syntax, scu, scp)
    return Association(conn, called_ae_title=rq.called_ae_title, calling_ae_title=rq.calling_ae_title,
                       peer_host=peer_host, contexts=accepted, max_receive_pdu=max_receive_pdu,
                       max_send_pdu=rq.max_pdu_length, artim_timeout=acse_timeout)


def request_association(host: str, port: int, *, calling_ae_title: str, called_ae_title: str,
                        contexts: list[PresentationContextRQ], max_receive_pdu: int,
                        connect_timeout: float | None, acse_timeout: float | None,
                        roles: dict[str, tuple[bool, bool]] | None = None, ip_family: str = "ipv4",
                        tls_client: tuple[ssl.SSLContext, str | None] | None = None) -> Association:
    """Open an association to ``host:port`` as requestor (C-MOVE sub-associations), over TLS with
    ``tls_client`` (the client context and the server name to ask for).

    Raises :class:`OSError` when the connection fails, :class:`tls.TLSFailure` when its handshake does,
    :class:`AssociationRejected` or :class:`AssociationFailed` when the peer does not accept.
    """
    sock = transport.connect(host, port, connect_timeout, ip_family)
    if tls_client is not None:
        context, server_name = tls_client
        sock = tls.connect(sock, context, server_name, acse_timeout)
    conn = Transport(sock)
    rq = AssociateRQ(called_ae_title=called_ae_title, calling_ae_title=calling_ae_title, contexts=contexts,
                     application_context=uids.APPLICATION_CONTEXT, max_pdu_length=max_receive_pdu,
                     implementation_class_uid=uids.IMPLEMENTATION_CLASS_UID,
                     implementation_version_name=uids.IMPLEMENTATION_VERSION_NAME, roles=dict(roles or {}))
    try:
        conn.send(pdu.encode_associate_rq(rq))
        pdu_type, body = conn.read_pdu(0, acse_timeout)
        if pdu_type == pdu.A_ASSOCIATE_RJ:
            raise AssociationRejected(*pdu.decode_associate_rj(body))
        if pdu_type != pdu.A_ASSOCIATE_AC:
            raise AssociationFailed(f"peer answered with {pdu.PDU_NAMES[pdu_type]}")
        ac = pdu.decode_associate_ac(body)
    except (OSError, pdu.PDUError, transport.TransportClosed, AssociationRejected, AssociationFailed) as error:
        conn.close()
        if isinstance(error, (pdu.PDUError, transport.TransportClosed)):
            raise AssociationFailed(str(error)) from error
        raise
    proposed = {context.context_id: context.abstract_syntax for context in contexts}
    accepted = {
        result.context_id: AcceptedContext(result.context_id, proposed[result.context_id], result.transfer_syntax)
        for result in ac.contexts
        if result.result == pdu.ACCEPTANCE and result.context_id in proposed
    }
    return Association(conn, called_ae_title=called_ae_title, calling_ae_title=calling_ae_title,
                       peer_host=host, contexts=accepted, max_receive_pdu=max_receive_pdu,
                       max_send_pdu=ac.max_pdu_length, artim_timeout=acse_timeout)


def peer_address(address: str) -> str:
    """The peer's IP address as we compare and log it: an IPv4 peer of a dual-stack socket (``-i0``),
    which arrives as ``::ffff:a.b.c.d``, is its IPv4 address (DCMTK keeps the mapped form;
    docs/differences.md #34)."""
    return address[7:] if address.startswith("::ffff:") and "." in address else address


def peer_name(address: str, lookup: bool) -> str:
    """The peer's presentation address as DCMTK logs and compares it: its reverse DNS name up to the first dot
    (DCMTK's DUL does not ask for the full domain name), or the IP when the lookup finds nothing or ``-dhl``
    turns it off (docs/configuration.md §4)."""
    if not lookup:
        return address
    try:
        name = socket.gethostbyaddr(address)[0]
    except OSError:
        return address
    if name == address or _is_address(name):   # a resolver that answers with the address: keep it whole
        return address
    return name.split(".", 1)[0] or address


def _is_address(text: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return True
        except OSError:
            pass
    return False
