"""The Query service (C-FIND SCP, ref §3): match the index, answer one pending response per entity.

The index is read once, under a shared lock that is released before the first response goes out
(decisions.md #2/#3: no lock is held while waiting on the network); responses are then produced one by
one, and a C-CANCEL-RQ is looked for before each of them.
"""
from __future__ import annotations

import logging
from typing import Iterator

from pydicom.dataset import Dataset

from qrscp import log
from qrscp.dicom import dump as datasetdump
from qrscp.dicom import identifiers as datasets
from qrscp.net import dimse
from qrscp.archive import matching
from qrscp.dicom.status import CANCEL, PENDING, SOP_CLASS_NOT_SUPPORTED, SUCCESS, UNABLE_TO_PROCESS

LOG = log.get_logger(log.DB)



def find_responses(session, identifier: Dataset, sop_class_uid: str) -> Iterator[tuple[int, Dataset | None]]:
    """Yield (status, identifier) for every response to a C-FIND, the final one last."""
    model = matching.FIND_MODELS.get(sop_class_uid)
    if model is None:
        yield SOP_CLASS_NOT_SUPPORTED, None
        return
    try:
        query = matching.parse_find(identifier, model, session.options.check_find)
        columns = session.area.read_columns(query.fields())
        rows = matching.find_matches(query, columns)
    except matching.QueryError as error:
        if error.log_level is not None:
            LOG.log(error.log_level, "%s", error)
        LOG.error("findSCP: Database: startFindRequest Failed (%s):", dimse.status_name(dimse.C_FIND_RQ, error.status))
        yield error.status, None
        return
    retrieve_ae_title = session.association.called_ae_title
    policy = session.server.charset_policy
    for row in rows:
        yield PENDING, matching.find_response(query, columns, row, retrieve_ae_title, policy)
    yield SUCCESS, None


def handle_find(session, context_id: int, request: dimse.Command) -> None:
    """Serve one C-FIND-RQ."""
    association = session.association
    context = association.contexts[context_id]
    message_id = request.get("MessageID", 0)
    if LOG.isEnabledFor(logging.INFO):
        LOG.info("Received Find SCP:\n%s", dimse.dump(request, incoming=True))
    data = association.receive_dataset_bytes(context_id, session.options.dimse_timeout)
    try:
        identifier = datasets.decode_identifier(data, context.transfer_syntax)
    except ValueError as error:
        LOG.error("findSCP: %s", error)
        responses: Iterator[tuple[int, Dataset | None]] = iter([(UNABLE_TO_PROCESS, None)])
    else:
        if LOG.isEnabledFor(logging.INFO):
            LOG.info("Find SCP Request Identifiers:\n%s", datasetdump.dump(data, context.transfer_syntax))
        responses = find_responses(session, identifier, request.get("AffectedSOPClassUID", ""))
    for number, (status, response_identifier) in enumerate(responses, start=1):
        if association.cancel_requested(message_id):
            status, response_identifier = CANCEL, None
        LOG.info("Find SCP Response %d [status: %s]", number, dimse.status_name(dimse.C_FIND_RQ, status))
        dataset = None
        if response_identifier is not None:
            dataset = datasets.encode_identifier(response_identifier, context.transfer_syntax)
            if LOG.isEnabledFor(logging.DEBUG):
                LOG.debug("Find SCP Response Identifiers:\n%s", datasetdump.dump(dataset, context.transfer_syntax))
        session.send(context_id, dimse.response(request, status), dataset)
        if status != PENDING:
            return
