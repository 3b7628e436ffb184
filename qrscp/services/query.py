"""The Query service (C-FIND SCP, docs/matching.md): one pending response per matching entity, then the final one.

The :class:`FindHandler` matches the index before the first response goes out and holds no lock while
the responses are sent (docs/differences.md #2, #3); :func:`find_responses` is a generator, and a C-CANCEL-RQ is
looked for before each response it yields.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from qrscp import log
from qrscp.dicom import dump, identifiers, uids
from qrscp.dicom.identifiers import Identifier
from qrscp.dicom.status import (
    CANCEL,
    PENDING,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    UNABLE_TO_PROCESS,
)
from qrscp.net import dimse
from qrscp.services.interfaces import FindHandler, RequestFailed
from qrscp.services.session import Session

LOG = log.get_logger(log.DB)


def find_responses(handler: FindHandler, identifier: Identifier,
                   sop_class_uid: str) -> Iterator[tuple[int, Identifier | None]]:
    """Yield (status, identifier) for every response to a C-FIND, the final one last."""
    try:
        if sop_class_uid not in uids.FIND_MODELS:
            raise RequestFailed(SOP_CLASS_NOT_SUPPORTED)
        matches = handler.find(sop_class_uid, identifier)
    except RequestFailed as failure:
        if failure.log_level is not None:
            LOG.log(failure.log_level, "%s", failure)
        LOG.error("findSCP: Database: startFindRequest Failed (%s):",
                  dimse.status_name(dimse.C_FIND_RQ, failure.status))
        yield failure.status, None
        return
    for response in matches:
        yield PENDING, response
    yield SUCCESS, None


def handle_find(session: Session, context_id: int, request: dimse.Command) -> None:
    """Serve one C-FIND-RQ."""
    association = session.association
    transfer_syntax = association.contexts[context_id].transfer_syntax
    message_id = request.get("MessageID", 0)
    if LOG.isEnabledFor(logging.INFO):
        LOG.info("Received Find SCP:\n%s", dimse.dump(request, incoming=True))
    data = association.receive_dataset_bytes(context_id, session.dimse_timeout)
    try:
        identifier = identifiers.decode_identifier(data, transfer_syntax)
    except ValueError as error:
        LOG.error("findSCP: %s", error)
        responses: Iterator[tuple[int, Identifier | None]] = iter([(UNABLE_TO_PROCESS, None)])
    else:
        if LOG.isEnabledFor(logging.INFO):
            LOG.info("Find SCP Request Identifiers:\n%s", dump.dump(data, transfer_syntax))
        responses = find_responses(session.find, identifier, request.get("AffectedSOPClassUID", ""))
    for number, (status, response_identifier) in enumerate(responses, start=1):
        if association.cancel_requested(message_id):
            status, response_identifier = CANCEL, None
        LOG.info("Find SCP Response %d [status: %s]", number, dimse.status_name(dimse.C_FIND_RQ, status))
        dataset = None
        if response_identifier is not None:
            dataset = identifiers.encode_identifier(response_identifier, transfer_syntax)
            if LOG.isEnabledFor(logging.DEBUG):
                LOG.debug("Find SCP Response Identifiers:\n%s", dump.dump(dataset, transfer_syntax))
        session.send(context_id, dimse.response(request, status), dataset)
        if status != PENDING:
            return
