"""The Verification service (C-ECHO SCP)."""
from __future__ import annotations

from qrscp import log
from qrscp.net import dimse

LOG = log.get_logger(log.DB)


def handle_echo(session, context_id: int, request: dimse.Command) -> None:
    """Answer a C-ECHO-RQ with Success, on whatever context it came (as the reference does)."""
    LOG.info("Received Echo SCP RQ: MsgID %d", request.get("MessageID", 0))
    session.send(context_id, dimse.response(request, 0x0000))
