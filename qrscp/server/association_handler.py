"""One association, from the first byte to release: screening, negotiation, DIMSE dispatch.

A worker runs this in a forked child (or inline with ``-s``). Services are looked up by command field;
each gets the :class:`Session` and the request, and talks to the peer through ``session.association``.
"""
from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

from qrscp import log
from qrscp.net import acse
from qrscp.net import dimse
from qrscp.services import query as find
from qrscp.net import hostaccess
from qrscp.net import pdu
from qrscp.services import retrieve
from qrscp.services import storage
from qrscp.net import transport
from qrscp.services import verification
from qrscp.net.association import Association, PeerAborted, ProtocolError, ReleaseRequested, closed_condition
from qrscp.config.association_profiles import Profile
from qrscp.dicom.charset import CharsetPolicy, charset_policy
from qrscp.config.config_file import AEEntry, Config
from qrscp.archive.storage_area import DatabaseError, StorageArea
from qrscp.dicom.fileformat import OutputFormat
from qrscp.config.options import Options
from qrscp.server.policy import CLOSE, TOO_MANY_ASSOCIATIONS, AssociationPolicy, Rejection
from qrscp.server.scoreboard import Scoreboard

LOG = log.get_logger(log.DB)


@dataclass
class Server:
    """What every association of one server run shares."""

    options: Options
    config: Config
    policy: AssociationPolicy
    scoreboard: Scoreboard | None = None
    #: ``-xf``: the profile proposed on C-MOVE sub-associations
    outgoing_profile: Profile | None = None
    #: called when a peer negotiated the private shutdown SOP class (``--allow-shutdown``)
    request_shutdown: Callable[[], None] = lambda: None

    #: open storage areas by (path, quota): kept across the associations a worker serves, so that
    #: their index caches stay warm (each validates itself against the file at every use)
    areas: dict[tuple[str, int, int], StorageArea] = field(default_factory=dict)

    def area(self, entry: AEEntry) -> StorageArea:
        """The storage area of ``entry`` (the reference's DB handle)."""
        key = (entry.storage_area, entry.max_studies, entry.max_bytes_per_study)
        area = self.areas.get(key)
        if area is None:
            area = self.areas[key] = StorageArea(*key)
        return area

    @property
    def max_pdu(self) -> int:
        """Our maximum receive PDU length: ``-pdu``, else the configuration's MaxPDUSize."""
        return self.options.max_pdu or self.config.max_pdu

    @cached_property
    def charset_policy(self) -> CharsetPolicy:
        """How query keys and responses are converted between character sets (:mod:`qrscp.dicom.charset`)."""
        options = self.options
        return charset_policy(self.config.charset_line, options.use_request_charset, options.convert_to,
                              options.transliterate, options.discard_illegal)

    @cached_property
    def output_format(self) -> OutputFormat:
        """How received data sets are written (the storage output options)."""
        return OutputFormat.from_options(self.options)


#: The responses :meth:`Session.send` dumps at debug level.
_DUMPED_AT_DEBUG = frozenset({dimse.C_FIND_RSP, dimse.C_MOVE_RSP})


@dataclass
class Session:
    """One established association and the archive it talks to."""

    server: Server
    association: Association
    entry: AEEntry
    #: operations performed, by name, for the closing summary line
    operations: Counter = field(default_factory=Counter)

    @property
    def options(self) -> Options:
        return self.server.options

    @property
    def area(self) -> StorageArea:
        """The storage area of the called AE."""
        return self.server.area(self.entry)

    def send(self, context_id: int, command: dimse.Command, dataset: bytes | None = None) -> None:
        """Send a message; C-FIND and C-MOVE responses are dumped at debug level, as the reference does
        (the services log the other messages their own way)."""
        if command["CommandField"] in _DUMPED_AT_DEBUG and LOG.isEnabledFor(logging.DEBUG):
            LOG.debug(dimse.dump(command, incoming=False, dataset_present=dataset is not None))
        self.association.send_message(context_id, command, dataset)


Service = Callable[[Session, int, dimse.Command], None]


#: The DIMSE services, by request command field.
SERVICES: dict[int, Service] = {
    dimse.C_ECHO_RQ: verification.handle_echo,
    dimse.C_STORE_RQ: storage.handle_store,
    dimse.C_FIND_RQ: find.handle_find,
    dimse.C_MOVE_RQ: retrieve.handle_move,
    dimse.C_GET_RQ: retrieve.handle_get,
}


def handle_connection(sock: socket.socket, address: tuple[str, int], server: Server,
                      slot: int | None = None) -> None:
    """Serve the association that arrives on ``sock``, until it ends. Never raises for the peer's faults."""
    transport.configure(sock)
    conn = transport.Transport(sock)
    options = server.options
    peer_ip = address[0]
    if options.access_control:
        name = acse.peer_name(peer_ip, lookup=True)
        if not hostaccess.host_allowed("dcmqrscp", peer_ip, name if name != peer_ip else None):
            LOG.info("Failed to receive association: 0006:0324 TCP wrapper: denied connection from %s (%s)",
                     name, peer_ip)
            conn.close()
            return
    try:
        rq = acse.read_associate_rq(conn, options.acse_timeout)
    except (pdu.PDUError, transport.TransportClosed, TimeoutError, OSError) as error:
        # a port probe (connect, then close) is not worth a line at INFO
        level = logging.DEBUG if isinstance(error, transport.TransportClosed) else logging.INFO
        LOG.log(level, "Failed to receive association: %s", error or type(error).__name__)
        conn.close()
        return
    peer_host = acse.peer_name(peer_ip, lookup=not options.disable_host_lookup)
    LOG.info("Association Received (%s:%s -> %s)", peer_host, rq.calling_ae_title, rq.called_ae_title)
    if LOG.isEnabledFor(logging.DEBUG):
        LOG.debug("Association Received: %s", peer_host)
    decision = server.policy.screen(rq, peer_host)
    if decision == CLOSE:
        conn.close()
        return
    if isinstance(decision, Rejection):
        _reject(conn, decision)
        return
    entry = server.config.ae_entry(rq.called_ae_title)
    assert entry is not None  # screened above
    scoreboard = server.scoreboard
    if scoreboard is not None and slot is not None:
        with scoreboard.locked():
            if scoreboard.accepted_count(exclude=slot) >= server.config.max_associations:
                _reject(conn, TOO_MANY_ASSOCIATIONS)
                return
            negotiation = server.policy.negotiate(rq, entry, scoreboard.storage_busy(entry.ae_title, slot))
            if not negotiation.shutdown:
                scoreboard.mark_accepted(slot, entry.ae_title, negotiation.has_storage)
    else:
        negotiation = server.policy.negotiate(rq, entry, parallel_store_busy=False)
    if negotiation.shutdown:
        LOG.info('Shutting down server ... (negotiated private "shut down" SOP class)')
        _reject(conn, Rejection(1, 1, 1, "NoReason"))
        server.request_shutdown()
        return
    try:
        association = acse.send_accept(conn, rq, negotiation.results, negotiation.roles, server.max_pdu, peer_host)
    except OSError as error:
        LOG.info("Failed to acknowledge association: %s", error)
        conn.close()
        return
    LOG.info("Association Acknowledged (Max Send PDV: %d)", association.max_send_pdv)
    if not negotiation.accepted:
        LOG.info("    (but no valid presentation contexts)")
    try:
        server.area(entry).start_association()  # the reference opens its DB handle at every association
    except DatabaseError:
        LOG.error("dispatch: cannot create DB Handle")
        LOG.error("DIMSE Failure (aborting association): 000c:0001 Index database error")
        association.abort()
        return
    session = Session(server, association, entry)
    started = time.monotonic()
    try:
        _dispatch(session)
    finally:
        if LOG.isEnabledFor(logging.INFO):
            counts = ", ".join(f"{n} {name}" for name, n in sorted(session.operations.items())) or "no operations"
            LOG.info("Association Summary (%s:%s -> %s): %s in %.3f s", peer_host, rq.calling_ae_title,
                     rq.called_ae_title, counts, time.monotonic() - started)


def _reject(conn: transport.Transport, rejection: Rejection) -> None:
    LOG.info("Refusing Association (%s)", rejection.log_reason)
    acse.send_reject(conn, rejection.result, rejection.source, rejection.reason)


def _dispatch(session: Session) -> None:
    """The DIMSE loop: one command after another until release, abort or a protocol error."""
    association = session.association
    fragment_timeout = session.options.dimse_timeout
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
            association.transport.close()
            return
        except (ProtocolError, pdu.PDUError, TimeoutError, OSError) as error:
            LOG.error("DIMSE Failure (aborting association): %s", error or type(error).__name__)
            association.abort()
            return
        except DatabaseError:  # the index became unusable during the association (logged where found)
            LOG.error("DIMSE Failure (aborting association): 000c:0001 Index database error")
            association.abort()
            return
