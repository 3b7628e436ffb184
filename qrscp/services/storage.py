"""The Storage service (C-STORE SCP, docs/storage.md): receive into a store target, check, commit.

The data set is passed fragment by fragment to the called AE's :class:`StoreHandler` as it arrives, so a
store costs one pass over the bytes; the service then checks the stored data set against the request
and commits it. A store that fails for any reason is abandoned: neither file nor index record remains.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from qrscp import log
from qrscp.dicom import fileformat, uids
from qrscp.dicom.status import (
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    NOT_AUTHORIZED,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    UNABLE_TO_PROCESS,
)
from qrscp.net import dimse
from qrscp.net.association import TIMEOUT_CONDITION, closed_condition
from qrscp.net.transport import TransportClosed
from qrscp.services.interfaces import RequestFailed, StoreRequest
from qrscp.services.session import Session, StoreSettings

LOG = log.get_logger(log.DB)

#: Of the data set of a C-STORE whose SOP class is no storage class, this much is kept (the rest is
#: dropped) to check its SOP Class and Instance UIDs against the request.
_UNKNOWN_CLASS_HEAD = 1 << 16


def _receive(session: Session, context_id: int, write: Callable[[memoryview], object]) -> None:
    """Receive the C-STORE data set into ``write``, showing DCMTK's ``RECV: ...`` dots at ``-v``; a data set
    that stops coming (the peer closed, or ``-td`` ran out) is logged as DCMTK logs it."""
    association = session.association
    shown = log.progress_shown()
    if shown:
        log.print_progress("RECV: ")

        def write_and_show(data: memoryview) -> None:
            write(data)
            log.print_progress(".")
    try:
        association.receive_dataset(context_id, write_and_show if shown else write, session.dimse_timeout)
    except TransportClosed as closed:
        LOG.error("Store SCP Failed: %s", closed_condition(closed, reading_command=False))
        raise
    except TimeoutError:
        LOG.error("Store SCP Failed: %s", TIMEOUT_CONDITION)
        raise
    finally:
        if shown:
            log.print_progress("\n")


def _discard(session: Session, context_id: int) -> None:
    _receive(session, context_id, lambda _data: None)


def _same_uid(dataset_uid: str, request_uid: str, uid_padding: bool) -> bool:
    if uid_padding:  # -up: one trailing space is silently removed from both
        dataset_uid = dataset_uid[:-1] if dataset_uid.endswith(" ") else dataset_uid
        request_uid = request_uid[:-1] if request_uid.endswith(" ") else request_uid
    return dataset_uid == request_uid


def _check_against_request(dataset_uids: tuple[str, str], request: StoreRequest, settings: StoreSettings,
                           name: str) -> None:
    """The reference's check of a received data set against its C-STORE-RQ (docs/storage.md §6): 0xC000 (and
    ``Bad image file: <name>``) without SOP Class or Instance UID, 0xA900 if either differs from the
    request. Raises :class:`RequestFailed`."""
    dataset_class, dataset_instance = dataset_uids
    if not dataset_class or not dataset_instance:
        LOG.error("Bad image file: %s", name)
        raise RequestFailed(UNABLE_TO_PROCESS)
    if not _same_uid(dataset_class, request.sop_class_uid, settings.uid_padding) or \
            not _same_uid(dataset_instance, request.sop_instance_uid, settings.uid_padding):
        raise RequestFailed(DATASET_DOES_NOT_MATCH_SOP_CLASS, "data set does not match the request")


def _refuse_unknown_class(session: Session, context_id: int, request: StoreRequest) -> int:
    """Receive and drop the data set of a C-STORE whose SOP class is no storage class: 0x0122, unless
    the data set fails the check against the request, which the reference reports first (docs/storage.md)."""
    head = bytearray()

    def keep_head(data: memoryview) -> None:
        head.extend(data[:_UNKNOWN_CLASS_HEAD + 1 - len(head)])   # one byte more tells that it was cut

    _receive(session, context_id, keep_head)
    try:
        dataset_uids = fileformat.head_sop_uids(bytes(head[:_UNKNOWN_CLASS_HEAD]), request.transfer_syntax)
    except ValueError:
        if len(head) > _UNKNOWN_CLASS_HEAD:   # the UIDs lie beyond what was kept: not checked
            return SOP_CLASS_NOT_SUPPORTED
        dataset_uids = ("", "")
    try:
        _check_against_request(dataset_uids, request, session.store_settings, "")
    except RequestFailed as failure:
        return failure.status
    return SOP_CLASS_NOT_SUPPORTED


def _store(session: Session, context_id: int, request: StoreRequest) -> int:
    """Receive the data set into a new store target, check it and commit it; the DIMSE status."""
    try:
        target = session.store.begin(request)
    except RequestFailed as failure:
        _discard(session, context_id)
        return failure.status
    committed = False
    try:
        _receive(session, context_id, target.write)
        _check_against_request(target.finish(), request, session.store_settings, target.path)
        try:
            target.commit()
        except RequestFailed as failure:
            LOG.error("storeSCP: Database: storeRequest Failed (%s): %s",
                      dimse.status_name(dimse.C_STORE_RQ, failure.status), failure)
            raise
        committed = True
        return SUCCESS
    except RequestFailed as failure:
        return failure.status
    finally:
        if not committed:
            LOG.info("Store SCP: Deleting Image File: %s", target.path)
            target.abandon()


def _status(session: Session, context_id: int, request: StoreRequest) -> int:
    """Store the data set, or receive and drop it where the request is refused; the DIMSE status."""
    if session.store_settings.ignore:
        _discard(session, context_id)
        return SUCCESS
    if request.sop_class_uid not in uids.STORAGE_SOP_CLASSES:
        return _refuse_unknown_class(session, context_id, request)
    if not session.store.writable:
        _discard(session, context_id)
        LOG.warning("storeSCP: storage area of %s is read-only", session.association.called_ae_title)
        return NOT_AUTHORIZED
    return _store(session, context_id, request)


def handle_store(session: Session, context_id: int, command: dimse.Command) -> None:
    """Serve one C-STORE-RQ."""
    association = session.association
    request = StoreRequest(command.get("AffectedSOPClassUID", ""), command.get("AffectedSOPInstanceUID", ""),
                           association.contexts[context_id].transfer_syntax, association.calling_ae_title)
    if LOG.isEnabledFor(logging.INFO):
        LOG.info("Received Store SCP:\n%s", dimse.dump(command, incoming=True))
    status = _status(session, context_id, request)
    response = dimse.response(command, status)
    if status == SUCCESS:
        if LOG.isEnabledFor(logging.INFO):
            LOG.info("Sending:\n%s", dimse.dump(response, incoming=False, dataset_present=False))
    else:
        LOG.warning("NOTICE: StoreSCP:\n%s", dimse.dump(response, incoming=False, dataset_present=False))
    session.send(context_id, response)
