"""The Retrieve services: C-MOVE and C-GET SCP (ref §6.4-6.5, decisions.md #2, #3, #9, #14).

Both match the index once (the shared lock is released before any sub-operation starts, so a move to
an AE of this very server cannot deadlock), then run a :class:`Retrieval`: the matched instances and a
``do_next`` step that sends one of them as a C-STORE sub-operation, through a :class:`Sender` — a
sub-association for C-MOVE, the requesting association itself for C-GET. A pending response follows every
sub-operation, and a C-CANCEL-RQ is looked for before each.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from qrscp import log
from qrscp.net import acse
from qrscp.dicom import dump as datasetdump
from qrscp.dicom import identifiers as datasets
from qrscp.net import dimse
from qrscp.dicom import fileformat
from qrscp.archive import locking
from qrscp.archive import matching
from qrscp.dicom import uids
from qrscp.net.association import Association, PeerAborted, ProtocolError, ReleaseRequested
from qrscp.net.pdu import PresentationContextRQ
from qrscp.dicom.status import (CANCEL, MOVE_DESTINATION_UNKNOWN, OUT_OF_RESOURCES_SUB_OPERATIONS, PENDING,
                          SOP_CLASS_NOT_SUPPORTED, SUCCESS, UNABLE_TO_PROCESS, WARNING)
from qrscp.net.transport import TransportClosed

LOG = log.get_logger(log.DB)


#: C-STORE statuses that count as a warning sub-operation (ref §6.4)
_WARNING_STATUSES = {0x0001, 0x0107, 0x0116}
#: DCMTK proposes its sub-associations with this maximum PDU length (ref §6.4).
SUB_ASSOCIATION_MAX_PDU = 16384
#: SOP Instance UID key
_SOP_INSTANCE_UID = 0x00080018


@dataclass(frozen=True)
class Instance:
    """One matched record: what a sub-operation sends."""

    filename: str
    sop_class_uid: str
    sop_instance_uid: str


class SubOperationFailed(Exception):
    """A sub-operation that could not even be attempted (no context, unreadable file, ...)."""


class Sender:
    """Sends one stored instance as a C-STORE request and returns the peer's status."""

    label = "Move"
    #: set when a C-CANCEL-RQ arrived while a sub-operation was under way (C-GET)
    cancelled = False

    def send(self, instance: Instance, stored: fileformat.StoredFile, data: bytes, priority: int) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """End whatever the sender opened."""


def _read_instance(instance: Instance) -> tuple[fileformat.StoredFile, bytes]:
    """The stored file of ``instance`` and its data set bytes, read under a shared file lock (ref §2.3)."""
    try:
        with locking.image_for_reading(instance.filename) as fd:
            with os.fdopen(os.dup(fd), "rb") as file:
                content = file.read()
    except OSError as error:  # the quota system may have deleted it since the match
        raise SubOperationFailed(f"cannot open file {instance.filename}: {error.strerror}") from error
    try:
        stored = fileformat.read_stored_file(instance.filename, content)
    except (OSError, ValueError) as error:
        raise SubOperationFailed(f"cannot read file {instance.filename}: {error}") from error
    return stored, content[stored.dataset_offset:]


def _send_store_request(association: Association, context_id: int, request: dimse.Command,
                        payload: bytes) -> None:
    """Send a sub-operation's C-STORE-RQ, and DCMTK's ``XMIT: ...`` line at ``-v`` (a dot per PDV)."""
    association.send_message(context_id, request, payload)
    if log.progress_shown():
        log.print_progress("XMIT: " + "." * association.fragment_count(len(payload)) + "\n")


def _encode_for(context_ts: str, stored: fileformat.StoredFile, data: bytes) -> bytes:
    if context_ts == stored.transfer_syntax:
        return data
    try:
        return fileformat.dataset_for_transfer(stored, data, context_ts)
    except ValueError as error:
        raise SubOperationFailed(str(error)) from error


def _pick_context(association: Association, instance: Instance, stored: fileformat.StoredFile,
                  requestor_scp: bool | None):
    """An accepted context for the instance's SOP class: its stored transfer syntax if possible."""
    context = association.context_for(instance.sop_class_uid, stored.transfer_syntax, requestor_scp)
    if context is None:
        context = next((c for c in association.contexts.values()
                        if c.abstract_syntax == instance.sop_class_uid
                        and c.transfer_syntax in uids.UNCOMPRESSED + (uids.DEFLATED_EXPLICIT_VR_LE,)
                        and (requestor_scp is None or c.scp_role == requestor_scp)), None)
    return context


def _store_request(association: Association, context_id: int, instance: Instance, priority: int,
                   **originator) -> dimse.Command:
    return {
        "CommandField": dimse.C_STORE_RQ,
        "MessageID": association.next_message_id(),
        "AffectedSOPClassUID": instance.sop_class_uid,
        "AffectedSOPInstanceUID": instance.sop_instance_uid,
        "Priority": priority,
        **originator,
    }


class SubAssociationSender(Sender):
    """C-MOVE: C-STORE requests on a sub-association to the move destination."""

    def __init__(self, association: Association, originator_ae_title: str, originator_message_id: int,
                 timeout: float | None) -> None:
        self.association = association
        self.originator = {"MoveOriginatorApplicationEntityTitle": originator_ae_title,
                           "MoveOriginatorMessageID": originator_message_id}
        self.timeout = timeout
        self.broken = False

    def send(self, instance: Instance, stored: fileformat.StoredFile, data: bytes, priority: int) -> int:
        if self.broken:
            raise SubOperationFailed("sub-association lost")
        context = _pick_context(self.association, instance, stored, None)
        if context is None:
            raise SubOperationFailed(f"No presentation context for: ({uids.file_prefix(instance.sop_class_uid)}) "
                                     f"{instance.sop_class_uid}")
        payload = _encode_for(context.transfer_syntax, stored, data)
        request = _store_request(self.association, context.context_id, instance, priority, **self.originator)
        LOG.info("Store SCU RQ: MsgID %d, (%s)", request["MessageID"], uids.file_prefix(instance.sop_class_uid))
        try:
            _send_store_request(self.association, context.context_id, request, payload)
            while True:
                context_id, response = self.association.receive_command(self.timeout, self.timeout)
                if dimse.has_dataset(response):
                    self.association.receive_dataset(context_id, lambda _d: None, self.timeout)
                if response["CommandField"] == dimse.C_STORE_RSP and \
                        response.get("MessageIDBeingRespondedTo") == request["MessageID"]:
                    return response.get("Status", UNABLE_TO_PROCESS)
        except (OSError, TimeoutError, TransportClosed, ProtocolError, PeerAborted, ReleaseRequested) as error:
            self.broken = True
            self.association.abort(0)
            raise SubOperationFailed(f"sub-association failed: {error or type(error).__name__}") from error

    def close(self) -> None:
        if not self.broken:
            LOG.info("Releasing Sub-Association")
            try:
                self.association.release(self.timeout)
            except (OSError, TimeoutError, TransportClosed):
                self.association.transport.close()


class SameAssociationSender(Sender):
    """C-GET: C-STORE requests on the requesting association, on contexts where the requestor is SCP."""

    label = "Get"

    def __init__(self, association: Association, get_message_id: int, timeout: float | None) -> None:
        self.association = association
        self.get_message_id = get_message_id
        self.timeout = timeout

    def send(self, instance: Instance, stored: fileformat.StoredFile, data: bytes, priority: int) -> int:
        context = _pick_context(self.association, instance, stored, True)
        if context is None:
            raise SubOperationFailed(f"No presentation context with requestor SCP role for: "
                                     f"({uids.file_prefix(instance.sop_class_uid)}) {instance.sop_class_uid}")
        payload = _encode_for(context.transfer_syntax, stored, data)
        request = _store_request(self.association, context.context_id, instance, priority)
        LOG.info("Store SCU RQ: MsgID %d, (%s)", request["MessageID"], uids.file_prefix(instance.sop_class_uid))
        _send_store_request(self.association, context.context_id, request, payload)
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


@dataclass
class Retrieval:
    """The sub-operations of one C-MOVE/C-GET: the instances, the counters and the next step."""

    instances: list[Instance]
    sender: Sender
    priority: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return len(self.instances) - self.completed - self.failed - self.warning

    def do_next(self) -> None:
        """Perform the next sub-operation and count its outcome."""
        instance = self.instances[len(self.instances) - self.remaining]
        try:
            stored, data = _read_instance(instance)
            status = self.sender.send(instance, stored, data, self.priority)
        except SubOperationFailed as error:
            LOG.error("%s SCP: storeSCU: [file: %s] %s", self.sender.label, instance.filename, error)
            status = None
        if status is not None:
            LOG.info("%s SCP: Received Store SCU RSP [Status=%s]", self.sender.label,
                     dimse.status_name(dimse.C_STORE_RQ, status))
        if status == SUCCESS:
            self.completed += 1
        elif status is not None and (status in _WARNING_STATUSES or 0xB000 <= status <= 0xBFFF):
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(instance.sop_instance_uid)

    def fail_all(self) -> None:
        """Count every remaining sub-operation as failed (no sub-association could be made)."""
        for instance in self.instances[len(self.instances) - self.remaining:]:
            self.failed += 1
            self.failed_uids.append(instance.sop_instance_uid)

    def counters(self, with_remaining: bool) -> dict[str, int]:
        fields = {"NumberOfCompletedSuboperations": self.completed,
                  "NumberOfFailedSuboperations": self.failed,
                  "NumberOfWarningSuboperations": self.warning}
        if with_remaining:
            fields["NumberOfRemainingSuboperations"] = self.remaining & 0xFFFF
        return fields

    def final_status(self) -> int:
        if self.failed == 0 and self.warning == 0:
            return SUCCESS
        if self.failed and self.completed + self.warning == 0:
            return OUT_OF_RESOURCES_SUB_OPERATIONS
        return WARNING


def _failed_list(uids_: list[str]) -> Dataset:
    dataset = Dataset()
    dataset.FailedSOPInstanceUIDList = uids_
    return dataset


def _match(session, request: dimse.Command, identifier: Dataset, models: dict) -> list[Instance] | int:
    """The instances a C-MOVE/C-GET identifier selects, or the failure status."""
    model = models.get(request.get("AffectedSOPClassUID", ""))
    if model is None:
        return SOP_CLASS_NOT_SUPPORTED
    try:
        query = matching.parse_retrieve(identifier, model, session.options.check_move)
    except matching.QueryError as error:
        if error.log_level is not None:
            LOG.log(error.log_level, "%s", error)
        name = dimse.status_name(request["CommandField"], error.status)
        if request["CommandField"] == dimse.C_GET_RQ:   # the reference's getSCP adds its condition text
            LOG.error("getSCP: Database: startMoveRequest Failed (%s): 000c:0001 Index database error", name)
        else:
            LOG.error("moveSCP: Database: startMoveRequest Failed (%s):", name)
        return error.status
    fields = list(dict.fromkeys([*query.fields(), "filename", "sop_class_uid", _SOP_INSTANCE_UID]))
    columns = session.area.read_columns(fields)
    filenames, classes, instances = columns["filename"], columns["sop_class_uid"], columns[_SOP_INSTANCE_UID]
    return [Instance(filenames[row].decode("utf-8", "surrogateescape"), classes[row].decode("ascii", "replace"),
                     instances[row].decode("ascii", "replace"))
            for row in matching.retrieve_matches(query, columns)]


def _receive_identifier(session, context_id: int, label: str) -> Dataset | None:
    association = session.association
    data = association.receive_dataset_bytes(context_id, session.options.dimse_timeout)
    transfer_syntax = association.contexts[context_id].transfer_syntax
    try:
        identifier = datasets.decode_identifier(data, transfer_syntax)
    except ValueError as error:
        LOG.error("retrieveSCP: %s", error)
        return None
    if LOG.isEnabledFor(logging.INFO):
        LOG.info("%s SCP Request Identifiers:\n%s", label, datasetdump.dump(data, transfer_syntax))
    return identifier


def _move_destination(session, destination: str):
    """The configured peer for ``destination``, or None after logging why it is refused (ref §6.4)."""
    options = session.options
    config = session.server.config
    association = session.association
    calling = association.calling_ae_title
    if options.move_aetitle and destination != calling:
        LOG.info("mapMoveDestination: strictMove Reqs: '%s' != '%s'", destination, calling)
        return None
    peer = config.peer_for_ae_title(destination)
    if peer is None:
        LOG.info("mapMoveDestination: unknown AE: '%s'", destination)
        return None
    if options.move_host and peer.host != association.peer_host:
        LOG.info("mapMoveDestination: different hosts: '%s', '%s'", association.peer_host, peer.host)
        return None
    if options.move_vendor and not config.same_vendor(calling, destination):
        LOG.info("mapMoveDestination: different vendors: '%s', '%s'", calling, destination)
        return None
    return peer


def _proposed_contexts(session, instances: list[Instance]) -> list[PresentationContextRQ]:
    """One context per SOP class of the matched instances, with the ``-x`` transfer syntaxes; with
    ``-xf`` the outgoing profile's contexts, in its order."""
    profile = session.server.outgoing_profile
    if profile is not None:
        return [PresentationContextRQ(2 * number + 1, sop_class, list(syntaxes))
                for number, (sop_class, syntaxes) in enumerate(profile.contexts[:128])]
    classes = list(dict.fromkeys(instance.sop_class_uid for instance in instances))[:128]
    transfer_syntaxes = list(session.options.outgoing_ts)
    return [PresentationContextRQ(2 * number + 1, sop_class, transfer_syntaxes)
            for number, sop_class in enumerate(classes)]


def _open_sub_association(session, destination: str, peer, instances: list[Instance]) -> Association | None:
    options = session.options
    LOG.info("Requesting Sub-Association")
    try:
        return acse.request_association(
            peer.host, peer.port, calling_ae_title=session.association.called_ae_title,
            called_ae_title=destination, contexts=_proposed_contexts(session, instances),
            max_receive_pdu=SUB_ASSOCIATION_MAX_PDU, connect_timeout=options.connect_timeout,
            acse_timeout=options.acse_timeout,
            roles=session.server.outgoing_profile.roles if session.server.outgoing_profile else None)
    except (OSError, acse.AssociationRejected, acse.AssociationFailed) as error:
        if isinstance(error, OSError) and error.strerror:   # as DCMTK words a failed connect
            LOG.error("moveSCP: Sub-Association Request Failed: 0006:031c TCP Initialization Error: %s",
                      error.strerror)
        else:
            LOG.error("moveSCP: Sub-Association Request Failed: %s", error)
        return None


def _run(session, context_id: int, request: dimse.Command, retrieval: Retrieval, label: str) -> None:
    """Pending responses after each sub-operation, then the final response (or 0xFE00 on cancel)."""
    association = session.association
    message_id = request.get("MessageID", 0)
    number = 0
    try:
        while retrieval.remaining:
            if association.cancel_requested(message_id) or retrieval.sender.cancelled:
                status = CANCEL
                break
            retrieval.do_next()
            if retrieval.sender.cancelled:
                status = CANCEL
                break
            number += 1
            LOG.info("%s SCP Response %d [status: Pending]", label, number)
            session.send(context_id, dimse.response(request, PENDING, **retrieval.counters(True)))
        else:
            status = CANCEL if association.cancel_requested(message_id) else retrieval.final_status()
    finally:
        retrieval.sender.close()
    _final(session, context_id, request, status, retrieval, number + 1, label)


def _final(session, context_id: int, request: dimse.Command, status: int, retrieval: Retrieval | None,
           number: int, label: str) -> None:
    """The final response; a refused request (``retrieval`` None) reports zero sub-operations."""
    retrieval = retrieval or Retrieval([], Sender())
    fields = retrieval.counters(status == CANCEL)
    dataset = None
    if retrieval.failed_uids and status not in (SUCCESS, PENDING):
        dataset = datasets.encode_identifier(_failed_list(retrieval.failed_uids),
                                             session.association.contexts[context_id].transfer_syntax)
    LOG.info("%s SCP Response %d [status: %s]", label, number, dimse.status_name(request["CommandField"], status))
    session.send(context_id, dimse.response(request, status, **fields), dataset)


def _start(session, context_id: int, request: dimse.Command, label: str, models: dict) -> list[Instance] | None:
    """The instances a C-MOVE/C-GET selects; None when it was refused (its final response is sent)."""
    if LOG.isEnabledFor(logging.INFO):
        LOG.info("Received %s SCP:\n%s", label, dimse.dump(request, incoming=True))
    identifier = _receive_identifier(session, context_id, label)
    matched = UNABLE_TO_PROCESS if identifier is None else _match(session, request, identifier, models)
    if isinstance(matched, int):
        _final(session, context_id, request, matched, None, 1, label)
        return None
    return matched


def handle_move(session, context_id: int, request: dimse.Command) -> None:
    """Serve one C-MOVE-RQ."""
    matched = _start(session, context_id, request, "Move", matching.MOVE_MODELS)
    if matched is None:
        return
    if not matched:  # the destination is not even looked at (ref §6.4)
        _final(session, context_id, request, SUCCESS, None, 1, "Move")
        return
    destination = request.get("MoveDestination", "")
    peer = _move_destination(session, destination)
    if peer is None:
        _final(session, context_id, request, MOVE_DESTINATION_UNKNOWN, None, 1, "Move")
        return
    sub_association = _open_sub_association(session, destination, peer, matched)
    if sub_association is None:
        retrieval = Retrieval(matched, Sender())
        retrieval.fail_all()
        _final(session, context_id, request, OUT_OF_RESOURCES_SUB_OPERATIONS, retrieval, 1, "Move")
        return
    sender = SubAssociationSender(sub_association, session.association.calling_ae_title,
                                  request.get("MessageID", 0), session.options.dimse_timeout)
    _run(session, context_id, request, Retrieval(matched, sender, request.get("Priority", 0)), "Move")


def handle_get(session, context_id: int, request: dimse.Command) -> None:
    """Serve one C-GET-RQ."""
    matched = _start(session, context_id, request, "Get", matching.GET_MODELS)
    if matched is None:
        return
    sender = SameAssociationSender(session.association, request.get("MessageID", 0), session.options.dimse_timeout)
    _run(session, context_id, request, Retrieval(matched, sender, request.get("Priority", 0)), "Get")
