"""The Storage service (C-STORE SCP, ref §7): receive into a new file, validate, register.

The data set is streamed from the network straight into its file (behind the file meta information),
so a store costs one pass over the bytes; only the index values are parsed back. A store that fails for
any reason leaves neither the file nor an index record behind.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable

from qrscp import log
from qrscp.net import dimse
from qrscp.dicom import fileformat
from qrscp.dicom import uids
from qrscp.net.association import Association, closed_condition
from qrscp.archive.storage_area import DatabaseError
from qrscp.archive.index_values import read_index_values
from qrscp.dicom.status import (DATASET_DOES_NOT_MATCH_SOP_CLASS, NOT_AUTHORIZED, OUT_OF_RESOURCES,
                          SOP_CLASS_NOT_SUPPORTED, SUCCESS, UNABLE_TO_PROCESS)
from qrscp.net.transport import TransportClosed

LOG = log.get_logger(log.DB)


class StoreFailed(Exception):
    """A C-STORE that ends with a failure ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _receive(association: Association, context_id: int, write: Callable[[memoryview], object],
             timeout: float | None) -> None:
    """Receive the C-STORE data set into ``write``, showing DCMTK's ``RECV: ...`` dots at ``-v``."""
    if not log.progress_shown():
        association.receive_dataset(context_id, write, timeout)
        return

    def write_and_show(data: memoryview) -> None:
        write(data)
        log.print_progress(".")

    log.print_progress("RECV: ")
    try:
        association.receive_dataset(context_id, write_and_show, timeout)
    finally:
        log.print_progress("\n")


def _discard(association: Association, context_id: int, timeout: float | None) -> None:
    _receive(association, context_id, lambda _data: None, timeout)


def _same_uid(dataset_uid: str, request_uid: str, uid_padding: bool) -> bool:
    if uid_padding:  # -up: one trailing space is silently removed from both
        dataset_uid = dataset_uid[:-1] if dataset_uid.endswith(" ") else dataset_uid
        request_uid = request_uid[:-1] if request_uid.endswith(" ") else request_uid
    return dataset_uid == request_uid


def _check_against_request(dataset_class: str, dataset_instance: str, request_class: str,
                           request_instance: str, uid_padding: bool, name: str) -> int | None:
    """The reference's check of a received data set against its C-STORE-RQ (ref §7 step 6): 0xC000 (and
    ``Bad image file: <name>``) without SOP Class or Instance UID, 0xA900 if either differs from the
    request; None if they agree."""
    if not dataset_class or not dataset_instance:
        LOG.error("Bad image file: %s", name)
        return UNABLE_TO_PROCESS
    if not _same_uid(dataset_class, request_class, uid_padding) or \
            not _same_uid(dataset_instance, request_instance, uid_padding):
        return DATASET_DOES_NOT_MATCH_SOP_CLASS
    return None


#: Of the data set of a C-STORE whose SOP class is no storage class, this much is kept (the rest is
#: dropped) to check its SOP Class and Instance UIDs against the request.
_UNKNOWN_CLASS_HEAD = 1 << 16


def _refuse_unknown_class(association: Association, context_id: int, transfer_syntax: str,
                          request_class: str, request_instance: str, options) -> int:
    """Receive and drop the data set of a C-STORE whose SOP class is no storage class: 0x0122, unless
    the data set fails the check against the request, which the reference reports first (ref §7)."""
    head = bytearray()

    def keep_head(data: memoryview) -> None:
        head.extend(data[:_UNKNOWN_CLASS_HEAD + 1 - len(head)])   # one byte more tells that it was cut

    _receive(association, context_id, keep_head, options.dimse_timeout)
    try:
        dataset_class, dataset_instance = fileformat.dataset_sop_uids(bytes(head[:_UNKNOWN_CLASS_HEAD]),
                                                                      transfer_syntax)
    except ValueError:
        if len(head) > _UNKNOWN_CLASS_HEAD:   # the UIDs lie beyond what was kept: not checked
            return SOP_CLASS_NOT_SUPPORTED
        dataset_class = dataset_instance = ""
    return _check_against_request(dataset_class, dataset_instance, request_class, request_instance,
                                  options.uid_padding, "") or SOP_CLASS_NOT_SUPPORTED


def handle_store(session, context_id: int, request: dimse.Command) -> None:
    """Serve one C-STORE-RQ."""
    sop_class_uid = request.get("AffectedSOPClassUID", "")
    sop_instance_uid = request.get("AffectedSOPInstanceUID", "")
    if LOG.isEnabledFor(logging.INFO):
        LOG.info("Received Store SCP:\n%s", dimse.dump(request, incoming=True))
    try:
        status = _receive_and_store(session, context_id, sop_class_uid, sop_instance_uid)
    except TransportClosed as closed:
        LOG.error("Store SCP Failed: %s", closed_condition(closed, reading_command=False))
        raise
    response = dimse.response(request, status)
    if status == SUCCESS:
        if LOG.isEnabledFor(logging.INFO):
            LOG.info("Sending:\n%s", dimse.dump(response, incoming=False, dataset_present=False))
    else:
        LOG.warning("NOTICE: StoreSCP:\n%s", dimse.dump(response, incoming=False, dataset_present=False))
    session.send(context_id, response)


def _receive_and_store(session, context_id: int, sop_class_uid: str, sop_instance_uid: str) -> int:
    """Receive the data set and store it, or drop it where the request is refused; the DIMSE status."""
    association = session.association
    options = session.options
    transfer_syntax = association.contexts[context_id].transfer_syntax
    if options.ignore:
        _discard(association, context_id, options.dimse_timeout)
        return SUCCESS
    if sop_class_uid not in uids.STORAGE_SOP_CLASSES:
        return _refuse_unknown_class(association, context_id, transfer_syntax, sop_class_uid, sop_instance_uid,
                                     options)
    if not session.entry.writable:
        _discard(association, context_id, options.dimse_timeout)
        LOG.warning("storeSCP: storage area of %s is read-only", session.entry.ae_title)
        return NOT_AUTHORIZED
    return _store(session, context_id, transfer_syntax, sop_class_uid, sop_instance_uid)


def _store(session, context_id: int, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str) -> int:
    """Receive, write, validate and register one instance; the DIMSE status."""
    area = session.area
    fmt = session.server.output_format
    try:
        path, fd = area.create_image_file(sop_class_uid)
    except OSError as error:
        _discard(session.association, context_id, session.options.dimse_timeout)
        LOG.error("storeSCP: cannot create image file: %s", error)
        return OUT_OF_RESOURCES
    stored = False
    try:
        try:
            _receive_into(session, context_id, fd, transfer_syntax, sop_class_uid, sop_instance_uid, fmt)
        except OSError as error:
            LOG.error("storescp: Cannot write image file: %s", error)
            raise StoreFailed(OUT_OF_RESOURCES, str(error)) from error
        try:
            values = read_index_values(path)
        except Exception as error:  # whatever the parser makes of a broken data set
            LOG.error("Bad image file: %s (%s)", path, error)
            raise StoreFailed(UNABLE_TO_PROCESS, str(error)) from error
        status = _check_against_request(values.sop_class_uid, values.sop_instance_uid, sop_class_uid,
                                        sop_instance_uid, session.options.uid_padding, path)
        if status is not None:
            raise StoreFailed(status, "data set does not match the request")
        try:
            area.register(path, sop_class_uid, values)
        except DatabaseError as error:
            LOG.error("storeSCP: Database: storeRequest Failed (%s): %s",
                      dimse.status_name(dimse.C_STORE_RQ, error.status), error)
            raise StoreFailed(error.status, str(error)) from error
        stored = True
        return SUCCESS
    except StoreFailed as failure:
        return failure.status
    finally:
        if not stored:
            LOG.info("Store SCP: Deleting Image File: %s", path)
            try:
                os.unlink(path)
            except OSError:
                pass
            try:
                area.prune_invalid_records()
            except Exception as error:  # pruning is housekeeping: never mask the store's own outcome
                LOG.error("storeSCP: pruning the index failed: %s", error)


class _Sink:
    """Writes to a file; after a write error (a full disk) it swallows the rest of the data set, so that
    the association stays in step, and :meth:`check` raises the error once everything is received."""

    def __init__(self, file) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes | memoryview) -> None:
        if self.error is None:
            try:
                self.file.write(data)
            except OSError as error:
                self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _receive_into(session, context_id: int, fd: int, transfer_syntax: str, sop_class_uid: str,
                  sop_instance_uid: str, fmt: fileformat.OutputFormat) -> None:
    """Receive the data set into the open file ``fd`` in the configured output format, and close it."""
    association = session.association
    timeout = session.options.dimse_timeout
    source = association.calling_ae_title
    with os.fdopen(fd, "wb", buffering=1 << 20) as file:
        if not fmt.needs_conversion(transfer_syntax):
            sink = _Sink(file)
            if fmt.write_file:
                sink.write(fileformat.file_meta(sop_class_uid, sop_instance_uid, transfer_syntax, source))
            _receive(association, context_id, sink.write, timeout)
            sink.check()
            return
        parts: list[bytes] = []
        _receive(association, context_id, lambda data: parts.append(bytes(data)), timeout)
        target = fmt.target_syntax(transfer_syntax)
        meta = fileformat.file_meta(sop_class_uid, sop_instance_uid, target, source) if fmt.write_file else b""
        try:
            data, target = fileformat.convert_dataset(b"".join(parts), transfer_syntax, fmt, len(meta))
        except ValueError as error:
            raise StoreFailed(UNABLE_TO_PROCESS, str(error)) from error
        file.write(meta)
        file.write(data)
