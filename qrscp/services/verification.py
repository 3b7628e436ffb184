"""The Verification service (C-ECHO SCP)."""
from __future__ import annotations

from qrscp import log
from qrscp.dicom.status import SUCCESS
from qrscp.net import dimse
from qrscp.services.session import Session

LOG = log.get_logger(log.DB)


def handle_echo(session: Session, context_id: int, request: dimse.Command) -> None:
    """Answer a C-ECHO-RQ with Success, on whatever context it came (as the reference does)."""
    LOG.info("Received Echo SCP RQ: MsgID %d", request.get("MessageID", 0))
    session.send(context_id, dimse.response(request, SUCCESS))
