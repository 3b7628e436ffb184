"""The Retrieve services: C-MOVE and C-GET SCP (docs/association.md §4-§5, docs/differences.md #2, #3, #9, #14).

Both let the :class:`RetrieveHandler` select the instances (no index lock is held afterwards, so a move
to an AE of this very server cannot deadlock), then run a :class:`Retrieval`, as Orthanc runs its
``IMoveRequestIterator``: a sub-operation count and a :meth:`Retrieval.do_next` step that sends one
instance as a C-STORE sub-operation through a :class:`Sender` — a sub-association for C-MOVE, the
requesting association itself for C-GET — on the accepted context its stored transfer syntax reaches
most cheaply, converted if need be (README "Transcoding"). A pending response follows every
sub-operation, and a C-CANCEL-RQ is looked for before each. While the peer stores one instance, the
next one's file is opened (the sender calls back once its request is sent), so that the peer's work and
ours overlap as they can on a machine with more than one core.
"""
from __future__ import annotations

import logging
import mmap
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Protocol

from qrscp import log
from qrscp.dicom import dump, identifiers, transcoding, uids
from qrscp.dicom.conversion import StoredInstance, Transfer, syntax_name
from qrscp.dicom.elements import raw_bytes
from qrscp.dicom.identifiers import Identifier, make_identifier
from qrscp.dicom.status import (
    CANCEL,
    OUT_OF_RESOURCES_SUB_OPERATIONS,
    PENDING,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    UNABLE_TO_PROCESS,
    WARNING,
)
from qrscp.net import dimse, pdu
from qrscp.net.association import (
    AcceptedContext,
    Association,
    DataSetPayload,
    PeerAborted,
    ProtocolError,
    ReleaseRequested,
    payload_size,
)
from qrscp.net.transport import TransportClosed
from qrscp.services.interfaces import (
    Instance,
    RequestFailed,
    RetrieveHandler,
    SubAssociationFailed,
)
from qrscp.services.session import Session

LOG = log.get_logger(log.DB)

FAILED_SOP_INSTANCE_UID_LIST = 0x00080058
#: C-STORE statuses that count as a warning sub-operation (docs/association.md §4)
_WARNING_STATUSES = {0x0001, 0x0107, 0x0116}


class SubOperationFailed(Exception):
    """A sub-operation that could not even be attempted (no context, unreadable file, ...)."""


@dataclass
class Outcomes:
    """The counts of a retrieval's sub-operations, and the SOP Instance UIDs of the failed ones."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def count(self, status: int | None, sop_instance_uid: str) -> None:
        """Count one sub-operation that ended with the C-STORE ``status`` (None: not attempted)."""
        if status == SUCCESS:
            self.completed += 1
        elif status is not None and (status in _WARNING_STATUSES or 0xB000 <= status <= 0xBFFF):
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(sop_instance_uid)

    def fields(self, with_remaining: bool) -> dict[str, int]:
        """The counters of a C-MOVE/C-GET response (Remaining only in pending and cancel responses)."""
        fields = {"NumberOfCompletedSuboperations": self.completed,
                  "NumberOfFailedSuboperations": self.failed,
                  "NumberOfWarningSuboperations": self.warning}
        if with_remaining:
            fields["NumberOfRemainingSuboperations"] = self.remaining & 0xFFFF
        return fields

    def final_status(self) -> int:
        """The status of the final response after the last sub-operation (docs/association.md §4)."""
        if self.failed == 0 and self.warning == 0:
            return SUCCESS
        if self.failed and self.completed + self.warning == 0:
            return OUT_OF_RESOURCES_SUB_OPERATIONS
        return WARNING


class Sender(Protocol):
    """Sends one stored instance as a C-STORE request and returns the peer's status."""

    #: how the reference's log lines name the service ("Move", "Get")
    label: str
    #: set when a C-CANCEL-RQ arrived while a sub-operation was under way (C-GET)
    cancelled: bool
    #: whether the C-STORE-RQs go to another association than the requestor's (C-MOVE)
    separate_association: bool

    def send(self, instance: Instance, stored: StoredInstance, priority: int, meanwhile: Callable[[], None]) -> int:
        """Send the C-STORE-RQ, call ``meanwhile`` (once the request is out), then wait for the response."""

    def close(self) -> None:
        """End whatever the sender opened."""


def _send_store_request(association: Association, context_id: int, request: dimse.Command,
                        payload: DataSetPayload) -> None:
    """Log and send a sub-operation's C-STORE-RQ, and DCMTK's ``XMIT: ...`` line at ``-v`` (a dot per PDV)."""
    if LOG.isEnabledFor(logging.INFO):
        LOG.info("Store SCU RQ: MsgID %d, (%s)", request["MessageID"],
                 uids.file_prefix(request["AffectedSOPClassUID"]))
    association.send_message(context_id, request, payload)
    if log.progress_shown():
        log.print_progress("XMIT: " + "." * association.fragment_count(payload_size(payload)) + "\n")


def _candidates(association: Association, instance: Instance, stored: StoredInstance,
                requestor_scp: bool | None) -> list[AcceptedContext]:
    """The accepted contexts of the instance's SOP class (and role) it can be sent on: the stored transfer
    syntax first, then the cheapest conversion (README "Transcoding"); the peer's order among equals."""
    costed = []
    for order, context in enumerate(association.contexts.values()):
        if context.abstract_syntax != instance.sop_class_uid or \
                (requestor_scp is not None and context.scp_role != requestor_scp):
            continue
        cost = stored.cost(context.transfer_syntax)
        if cost is not None:
            costed.append((cost, order, context))
    return [context for _cost, _order, context in sorted(costed, key=lambda entry: entry[:2])]


#: Byte 0 set once the server has said which extra would have converted an instance: anonymous shared
#: memory, mapped before the workers are forked, so that it is said once per server run.
_EXTRA_NAMED = mmap.mmap(-1, 1, flags=mmap.MAP_SHARED)


def _name_missing_extra(association: Association, instance: Instance, stored: StoredInstance,
                        requestor_scp: bool | None, label: str) -> None:
    """Warn, once per server run, that the ``codecs`` extra would have converted an instance the peer did
    not accept in its stored transfer syntax."""
    if _EXTRA_NAMED[0]:
        return
    target = next((context.transfer_syntax for context in association.contexts.values()
                   if context.abstract_syntax == instance.sop_class_uid
                   and (requestor_scp is None or context.scp_role == requestor_scp)
                   and stored.needs_codecs_extra(context.transfer_syntax)), None)
    if target is not None:
        _EXTRA_NAMED[0] = 1
        LOG.warning("%s SCP: %s is stored in %s, which the peer did not accept; qrscp's '%s' extra would have "
                    "converted it to %s (%s). Said once.", label, instance.location,
                    syntax_name(stored.transfer_syntax), transcoding.EXTRA, syntax_name(target),
                    transcoding.INSTALL_HINT)


def _prepare(association: Association, instance: Instance, stored: StoredInstance, requestor_scp: bool | None,
             label: str, no_context: str) -> tuple[AcceptedContext, Transfer]:
    """The context to send the instance on and the data set encoded for it. A conversion that fails (a
    corrupt stream, a layout the codec refuses) falls back to the next candidate; raises
    :class:`SubOperationFailed` when none is left."""
    candidates = _candidates(association, instance, stored, requestor_scp)
    if not candidates:
        _name_missing_extra(association, instance, stored, requestor_scp, label)
        raise SubOperationFailed(f"{no_context}: ({uids.file_prefix(instance.sop_class_uid)}) "
                                 f"{instance.sop_class_uid}")
    failures = []
    for context in candidates:
        if context.transfer_syntax != stored.transfer_syntax:
            LOG.debug("%s SCP: converting %s from %s to %s", label, instance.location,
                      syntax_name(stored.transfer_syntax), syntax_name(context.transfer_syntax))
        try:
            return context, stored.transfer(context.transfer_syntax)
        except ValueError as error:
            failures.append(str(error))
    raise SubOperationFailed("; ".join(dict.fromkeys(failures)))


def _store_request(association: Association, instance: Instance, transfer: Transfer, priority: int,
                   **originator: object) -> dimse.Command:
    return {
        "CommandField": dimse.C_STORE_RQ,
        "MessageID": association.next_message_id(),
        "AffectedSOPClassUID": instance.sop_class_uid,
        "AffectedSOPInstanceUID": transfer.sop_instance_uid,
        "Priority": priority,
        **originator,
    }


class SubAssociationSender:
    """C-MOVE: C-STORE requests on a sub-association to the move destination."""

    label = "Move"
    separate_association = True

    def __init__(self, association: Association, originator_ae_title: str, originator_message_id: int,
                 timeout: float | None) -> None:
        self.association = association
        self.originator = {"MoveOriginatorApplicationEntityTitle": originator_ae_title,
                           "MoveOriginatorMessageID": originator_message_id}
        self.timeout = timeout
        self.cancelled = False
        self.broken = False

    def send(self, instance: Instance, stored: StoredInstance, priority: int, meanwhile: Callable[[], None]) -> int:
        if self.broken:
            raise SubOperationFailed("sub-association lost")
        context, transfer = _prepare(self.association, instance, stored, None, self.label,
                                     "No presentation context for")
        request = _store_request(self.association, instance, transfer, priority, **self.originator)
        try:
            _send_store_request(self.association, context.context_id, request, transfer.dataset)
            meanwhile()
            while True:
                context_id, response = self.association.receive_command(self.timeout, self.timeout)
                if dimse.has_dataset(response):
                    self.association.receive_dataset(context_id, lambda _d: None, self.timeout)
                if response["CommandField"] == dimse.C_STORE_RSP and \
                        response.get("MessageIDBeingRespondedTo") == request["MessageID"]:
                    return response.get("Status", UNABLE_TO_PROCESS)
        except (OSError, TimeoutError, TransportClosed, pdu.PDUError, ProtocolError, PeerAborted,
                ReleaseRequested) as error:   # the destination misbehaved: its sub-operations fail, not our peer's
            self.broken = True
            self.association.abort()
            raise SubOperationFailed(f"sub-association failed: {str(error) or type(error).__name__}") from error

    def close(self) -> None:
        if not self.broken:
            LOG.info("Releasing Sub-Association")
            try:
                self.association.release(self.timeout)
            except (OSError, TimeoutError, TransportClosed, pdu.PDUError):
                self.association.transport.close()


class SameAssociationSender:
    """C-GET: C-STORE requests on the requesting association, on contexts where the requestor is SCP."""

    label = "Get"
    separate_association = False

    def __init__(self, association: Association, get_message_id: int, timeout: float | None) -> None:
        self.association = association
        self.get_message_id = get_message_id
        self.timeout = timeout
        self.cancelled = False

    def send(self, instance: Instance, stored: StoredInstance, priority: int, meanwhile: Callable[[], None]) -> int:
        context, transfer = _prepare(self.association, instance, stored, True, self.label,
                                     "No presentation context with requestor SCP role for")
        request = _store_request(self.association, instance, transfer, priority)
        _send_store_request(self.association, context.context_id, request, transfer.dataset)
        meanwhile()
        while True:
            context_id, response = self.association.receive_command(self.timeout, self.timeout)
            if dimse.has_dataset(response):
                self.association.receive_dataset(context_id, lambda _d: None, self.timeout)
            field_ = response["CommandField"]
            if field_ == dimse.C_CANCEL_RQ and response.get("MessageIDBeingRespondedTo") == self.get_message_id:
                self.cancelled = True
            elif field_ == dimse.C_STORE_RSP and response.get("MessageIDBeingRespondedTo") == request["MessageID"]:
                return response.get("Status", UNABLE_TO_PROCESS)
            elif field_ != dimse.C_CANCEL_RQ:
                raise ProtocolError("unexpected command during a C-GET sub-operation")

    def close(self) -> None:
        """Nothing to end: the association is the requestor's."""


def _unopened(instance: Instance, error: OSError) -> str:
    return f"cannot open file {instance.location}: {error.strerror}"


def _unreadable(instance: Instance, error: ValueError) -> str:
    return f"cannot read file {instance.location}: {error}"


@dataclass
class _Opened:
    """An instance's stored file, held open (``files``: what closes it) or why it could not be."""

    files: ExitStack
    stored: StoredInstance | None = None
    failure: SubOperationFailed | None = None


class Retrieval:
    """The sub-operations of one C-MOVE or C-GET: their count and the next step; :meth:`close` when done."""

    def __init__(self, instances: list[Instance], handler: RetrieveHandler, sender: Sender,
                 priority: int = 0) -> None:
        self.instances = instances
        self.handler = handler
        self.sender = sender
        self.priority = priority
        self.outcomes = Outcomes(total=len(instances))
        self._next: _Opened | None = None    # the next instance's file, opened while the peer stored one

    @property
    def sub_operation_count(self) -> int:
        return len(self.instances)

    def _open(self, instance: Instance) -> _Opened:
        files = ExitStack()
        try:
            return _Opened(files, stored=files.enter_context(self.handler.open(instance)))
        except OSError as error:   # the quota system may have deleted it since the match
            return _Opened(files, failure=SubOperationFailed(_unopened(instance, error)))
        except ValueError as error:
            return _Opened(files, failure=SubOperationFailed(_unreadable(instance, error)))

    def _open_next(self) -> None:
        """Open the next sub-operation's file, if there is one (called while the peer stores this one)."""
        following = self.sub_operation_count - self.outcomes.remaining + 1
        if self._next is None and following < self.sub_operation_count:
            self._next = self._open(self.instances[following])

    def do_next(self, meanwhile: Callable[[], None] = lambda: None) -> None:
        """Perform the next sub-operation and count its outcome; ``meanwhile`` is called (before the next
        file is opened) while the peer stores the instance, and what it raises is raised once the
        sub-operation is done and counted: it is not the sub-operation's failure (the requestor's
        association failing under a pending response, say)."""
        instance = self.instances[self.sub_operation_count - self.outcomes.remaining]
        opened, self._next = self._next or self._open(instance), None
        meanwhile_failed: Exception | None = None

        def while_the_peer_stores() -> None:
            nonlocal meanwhile_failed
            try:
                meanwhile()
            except Exception as error:
                meanwhile_failed = error
            self._open_next()

        try:
            try:
                with opened.files:
                    if opened.failure is not None:
                        raise opened.failure
                    assert opened.stored is not None
                    status: int | None = self.sender.send(instance, opened.stored, self.priority,
                                                          while_the_peer_stores)
            except OSError as error:
                raise SubOperationFailed(_unopened(instance, error)) from error
            except ValueError as error:
                raise SubOperationFailed(_unreadable(instance, error)) from error
        except SubOperationFailed as error:
            LOG.error("%s SCP: storeSCU: [file: %s] %s", self.sender.label, instance.location, error)
            status = None
        if status is not None and LOG.isEnabledFor(logging.INFO):
            LOG.info("%s SCP: Received Store SCU RSP [Status=%s]", self.sender.label,
                     dimse.status_name(dimse.C_STORE_RQ, status))
        self.outcomes.count(status, instance.sop_instance_uid)
        if meanwhile_failed is not None:
            raise meanwhile_failed

    def close(self) -> None:
        """Close the file opened ahead, if the sub-operations ended before its turn (a cancel, an abort)."""
        if self._next is not None:
            self._next.files.close()
            self._next = None


def _failed_list(failed_uids: list[str]) -> Identifier:
    return make_identifier([(FAILED_SOP_INSTANCE_UID_LIST, "UI", raw_bytes("\\".join(failed_uids)))])


def _receive_identifier(session: Session, context_id: int, label: str) -> Identifier | None:
    association = session.association
    data = association.receive_dataset_bytes(context_id, session.dimse_timeout)
    transfer_syntax = association.contexts[context_id].transfer_syntax
    try:
        identifier = identifiers.decode_identifier(data, transfer_syntax)
    except ValueError as error:
        LOG.error("retrieveSCP: %s", error)
        return None
    if LOG.isEnabledFor(logging.INFO):
        LOG.info("%s SCP Request Identifiers:\n%s", label, dump.dump(data, transfer_syntax))
    return identifier


def _final(session: Session, context_id: int, request: dimse.Command, status: int, outcomes: Outcomes,
           number: int, label: str) -> None:
    """The final response: the counters, and the Failed SOP Instance UID List after failures."""
    dataset = None
    if outcomes.failed_uids and status not in (SUCCESS, PENDING):
        dataset = identifiers.encode_identifier(_failed_list(outcomes.failed_uids),
                                                session.association.contexts[context_id].transfer_syntax)
    LOG.info("%s SCP Response %d [status: %s]", label, number, dimse.status_name(request["CommandField"], status))
    session.send(context_id, dimse.response(request, status, **outcomes.fields(status == CANCEL)), dataset)


def _run(session: Session, context_id: int, request: dimse.Command, retrieval: Retrieval) -> None:
    """Pending responses after each sub-operation, then the final response (or 0xFE00 on cancel).

    On a sub-association (C-MOVE) a sub-operation's pending response goes out once the next C-STORE-RQ
    is sent (or before the final response), so that the requestor reads it while the destination stores;
    a C-CANCEL-RQ is looked for before each sub-operation all the same, and the log keeps DCMTK's order
    (at -d, which dumps each response as it is sent, pending responses go out at once)."""
    association = session.association
    sender = retrieval.sender
    message_id = request.get("MessageID", 0)
    number = 0
    pending: dimse.Command | None = None     # a pending response not sent yet

    def send_pending() -> None:
        nonlocal pending
        if pending is not None:
            response, pending = pending, None
            session.send(context_id, response)

    try:
        while retrieval.outcomes.remaining:
            if association.cancel_requested(message_id) or sender.cancelled:
                status = CANCEL
                break
            retrieval.do_next(send_pending)
            send_pending()
            if sender.cancelled:
                status = CANCEL
                break
            number += 1
            LOG.info("%s SCP Response %d [status: Pending]", sender.label, number)
            pending = dimse.response(request, PENDING, **retrieval.outcomes.fields(True))
            if not sender.separate_association or LOG.isEnabledFor(logging.DEBUG):
                send_pending()     # at -d its dump, logged as it is sent, keeps DCMTK's place
        else:
            status = CANCEL if association.cancel_requested(message_id) else retrieval.outcomes.final_status()
        send_pending()
    finally:
        retrieval.close()
        sender.close()
    _final(session, context_id, request, status, retrieval.outcomes, number + 1, sender.label)


def _select(session: Session, context_id: int, request: dimse.Command, label: str,
            models: tuple[str, ...]) -> list[Instance]:
    """The instances a C-MOVE/C-GET selects. Raises :class:`RequestFailed` when it is refused."""
    if LOG.isEnabledFor(logging.INFO):
        LOG.info("Received %s SCP:\n%s", label, dimse.dump(request, incoming=True))
    identifier = _receive_identifier(session, context_id, label)
    if identifier is None:
        raise RequestFailed(UNABLE_TO_PROCESS)
    sop_class_uid = request.get("AffectedSOPClassUID", "")
    try:
        if sop_class_uid not in models:
            raise RequestFailed(SOP_CLASS_NOT_SUPPORTED)
        return session.retrieve.match(sop_class_uid, identifier)
    except RequestFailed as failure:
        if failure.log_level is not None:
            LOG.log(failure.log_level, "%s", failure)
        name = dimse.status_name(request["CommandField"], failure.status)
        if request["CommandField"] == dimse.C_GET_RQ:   # the reference's getSCP adds its condition text
            LOG.error("getSCP: Database: startMoveRequest Failed (%s): 000c:0001 Index database error", name)
        else:
            LOG.error("moveSCP: Database: startMoveRequest Failed (%s):", name)
        raise


def handle_move(session: Session, context_id: int, request: dimse.Command) -> None:
    """Serve one C-MOVE-RQ."""
    try:
        matched = _select(session, context_id, request, "Move", uids.MOVE_MODELS)
    except RequestFailed as failure:
        _final(session, context_id, request, failure.status, Outcomes(), 1, "Move")
        return
    if not matched:  # the destination is not even looked at (docs/association.md §4)
        _final(session, context_id, request, SUCCESS, Outcomes(), 1, "Move")
        return
    try:
        destination = session.move_destinations.resolve(request.get("MoveDestination", ""))
    except RequestFailed as failure:
        if failure.log_level is not None:
            LOG.log(failure.log_level, "%s", failure)
        _final(session, context_id, request, failure.status, Outcomes(), 1, "Move")
        return
    LOG.info("Requesting Sub-Association")
    try:
        sub_association = session.sub_associations.request(destination, matched)
    except SubAssociationFailed as error:
        LOG.error("moveSCP: Sub-Association Request Failed: %s", error)
        outcomes = Outcomes(total=len(matched))
        for instance in matched:
            outcomes.count(None, instance.sop_instance_uid)
        _final(session, context_id, request, OUT_OF_RESOURCES_SUB_OPERATIONS, outcomes, 1, "Move")
        return
    sender = SubAssociationSender(sub_association, session.association.calling_ae_title,
                                  request.get("MessageID", 0), session.dimse_timeout)
    _run(session, context_id, request, Retrieval(matched, session.retrieve, sender, request.get("Priority", 0)))


def handle_get(session: Session, context_id: int, request: dimse.Command) -> None:
    """Serve one C-GET-RQ."""
    try:
        matched = _select(session, context_id, request, "Get", uids.GET_MODELS)
    except RequestFailed as failure:
        _final(session, context_id, request, failure.status, Outcomes(), 1, "Get")
        return
    sender = SameAssociationSender(session.association, request.get("MessageID", 0), session.dimse_timeout)
    _run(session, context_id, request, Retrieval(matched, session.retrieve, sender, request.get("Priority", 0)))
