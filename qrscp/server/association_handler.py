"""One connection, from its first byte to the end of its association: screening, negotiation, dispatch.

A worker runs :func:`serve` for each connection it accepts (the supervisor itself does with ``-s``).
Services are looked up by command field in :data:`SERVICES`; each gets the association's
:class:`~qrscp.services.session.Session` and the request.
"""
from __future__ import annotations

import logging
import socket
import time
from bdb import BdbQuit

from qrscp import log
from qrscp.archive.storage_area import DatabaseError
from qrscp.net import acse, dimse, hostaccess, pdu, tls, transport
from qrscp.net.association import TIMEOUT_CONDITION, PeerAborted, ProtocolError, ReleaseRequested, closed_condition
from qrscp.server.context import ServerContext
from qrscp.server.policy import (
    NO_REASON,
    TOO_MANY_ASSOCIATIONS,
    AssociationDropped,
    AssociationRefused,
    Rejection,
)
from qrscp.services import query, retrieve, storage, verification
from qrscp.services.session import Service, Session

LOG = log.get_logger(log.DB)
TLS_LOG = log.get_logger(log.TLS)

#: The DIMSE services, by request command field.
SERVICES: dict[int, Service] = {
    dimse.C_ECHO_RQ: verification.handle_echo,
    dimse.C_STORE_RQ: storage.handle_store,
    dimse.C_FIND_RQ: query.handle_find,
    dimse.C_MOVE_RQ: retrieve.handle_move,
    dimse.C_GET_RQ: retrieve.handle_get,
}


def serve(sock: socket.socket, address: tuple[str, int], context: ServerContext, slot: int | None = None) -> None:
    """:func:`handle_connection`, where a bug (an exception that bad input must never cause) is logged and
    ends only this association; the debugger's quit (``-s`` under pdb) still ends the server."""
    try:
        handle_connection(sock, address, context, slot)
    except BdbQuit:
        raise
    except Exception:
        LOG.exception("association ended by an internal error")
        sock.close()   # (a TLS socket that took it over closes when it is collected)


def handle_connection(sock: socket.socket, address: tuple[str, int], context: ServerContext,
                      slot: int | None = None) -> None:
    """Serve the association that arrives on ``sock``, until it ends (``slot``: this worker's place in
    the scoreboard). Never raises for the peer's faults."""
    transport.configure(sock)
    options = context.options
    peer_ip = acse.peer_address(address[0])
    if options.access_control:
        name = acse.peer_name(peer_ip, lookup=True)
        if not hostaccess.host_allowed("dcmqrscp", peer_ip, name if name != peer_ip else None):
            LOG.info("Failed to receive association: 0006:0324 TCP wrapper: denied connection from %s (%s)",
                     name, peer_ip)
            sock.close()
            return
    if context.tls is not None:
        try:
            sock = tls.accept(sock, context.tls.server, options.acse_timeout)
        except tls.TLSFailure as failure:   # a port probe is not worth a line at INFO, as without TLS
            LOG.log(logging.DEBUG if failure.vanished else logging.INFO, "Failed to receive association: %s", failure)
            return
        if TLS_LOG.isEnabledFor(logging.DEBUG):
            for line in tls.connection_details(sock):
                TLS_LOG.debug("%s", line)
        subject = tls.peer_subject(sock) if LOG.isEnabledFor(logging.INFO) else None   # for the summary line
        secured = f" over {sock.version()}" + (f" (peer certificate {subject})" if subject else "")
    else:
        secured = ""
    conn = transport.Transport(sock)
    try:
        rq = acse.read_associate_rq(conn, options.acse_timeout)
    except (pdu.PDUError, transport.TransportClosed, TimeoutError, OSError) as error:
        # a port probe (connect, then close) is not worth a line at INFO
        level = logging.DEBUG if isinstance(error, transport.TransportClosed) else logging.INFO
        LOG.log(level, "Failed to receive association: %s", str(error) or type(error).__name__)
        conn.close()
        return
    peer_host = acse.peer_name(peer_ip, lookup=not options.disable_host_lookup)
    LOG.info("Association Received (%s:%s -> %s)", peer_host, rq.calling_ae_title, rq.called_ae_title)
    if LOG.isEnabledFor(logging.DEBUG):
        LOG.debug("Association Received: %s", peer_host)
    try:
        context.policy.screen(rq, peer_host)
    except AssociationDropped:
        conn.close()
        return
    except AssociationRefused as refused:
        _reject(conn, refused.rejection)
        return
    entry = context.config.ae_entry(rq.called_ae_title)
    assert entry is not None  # screened above
    scoreboard = context.scoreboard
    if scoreboard is not None and slot is not None:
        with scoreboard.locked():
            if scoreboard.accepted_count(exclude=slot) >= context.config.max_associations:
                _reject(conn, TOO_MANY_ASSOCIATIONS)
                return
            negotiation = context.policy.negotiate(rq, entry, scoreboard.storage_busy(entry.ae_title, slot))
            if not negotiation.shutdown:
                scoreboard.mark_accepted(slot, entry.ae_title, negotiation.has_storage)
    else:
        negotiation = context.policy.negotiate(rq, entry, parallel_store_busy=False)
    if negotiation.shutdown:
        LOG.info('Shutting down server ... (negotiated private "shut down" SOP class)')
        _reject(conn, NO_REASON)
        context.request_shutdown()
        return
    try:
        association = acse.send_accept(conn, rq, negotiation.results, negotiation.roles, context.max_pdu, peer_host,
                                       options.acse_timeout)
    except OSError as error:
        LOG.info("Failed to acknowledge association: %s", error)
        conn.close()
        return
    LOG.info("Association Acknowledged (Max Send PDV: %d)", association.max_send_pdv)
    if not negotiation.accepted:
        LOG.info("    (but no valid presentation contexts)")
    try:
        context.area(entry).start_association()  # the reference opens its DB handle at every association
    except DatabaseError:
        LOG.error("dispatch: cannot create DB Handle")
        LOG.error("DIMSE Failure (aborting association): 000c:0001 Index database error")
        association.abort()
        return
    session = context.session(association, entry)
    started = time.monotonic()
    try:
        _dispatch(session)
    finally:
        if LOG.isEnabledFor(logging.INFO):
            counts = ", ".join(f"{n} {name}" for name, n in sorted(session.operations.items())) or "no operations"
            LOG.info("Association Summary (%s:%s -> %s): %s in %.3f s%s", peer_host, rq.calling_ae_title,
                     rq.called_ae_title, counts, time.monotonic() - started, secured)


def _reject(conn: transport.Transport, rejection: Rejection) -> None:
    LOG.info("Refusing Association (%s)", rejection.log_reason)
    acse.send_reject(conn, rejection.result, rejection.source, rejection.reason)


def _dispatch(session: Session) -> None:
    """The DIMSE loop: one command after another until release, abort or a protocol error."""
    association = session.association
    fragment_timeout = session.dimse_timeout
    while True:
        in_service = False
        try:
            context_id, command = association.receive_command(None, fragment_timeout)
            field_ = command["CommandField"]
            if field_ == dimse.C_CANCEL_RQ:
                LOG.info("dispatch: late C-CANCEL-RQ, ignoring")
                continue
            service = SERVICES.get(field_)
            if service is None:
                LOG.error("Cannot handle command: 0x%x", field_)
                association.abort()
                return
            session.operations[dimse.MESSAGE_NAMES[field_].split()[0]] += 1
            in_service = True
            service(session, context_id, command)
        except ReleaseRequested:
            LOG.info("Association Release")
            association.acknowledge_release()
            return
        except PeerAborted:
            LOG.info("Association Aborted")
            association.transport.close()
            return
        except transport.TransportClosed as closed:   # worded as the reference's network layer does
            if closed.partial:
                LOG.error("DIMSE Failure (aborting association): %s",
                          closed_condition(closed, reading_command=not in_service))
            else:
                LOG.info("Association Aborted")
            if closed.partial and closed.timed_out:   # a peer still there, silent mid-PDU: DCMTK aborts
                association.abort()
            else:
                association.transport.close()
            return
        except TimeoutError:
            LOG.error("DIMSE Failure (aborting association): %s", TIMEOUT_CONDITION)
            association.abort()
            return
        except (ProtocolError, pdu.PDUError, OSError) as error:
            LOG.error("DIMSE Failure (aborting association): %s", str(error) or type(error).__name__)
            association.abort()
            return
        except DatabaseError:  # the index became unusable during the association (logged where found)
            LOG.error("DIMSE Failure (aborting association): 000c:0001 Index database error")
            association.abort()
            return
