"""What a DIMSE service works with: the association and the narrow interfaces behind it."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from qrscp import log
from qrscp.net import dimse
from qrscp.net.association import Association
from qrscp.services.interfaces import (
    FindHandler,
    MoveDestinations,
    RetrieveHandler,
    StoreHandler,
    SubAssociations,
)

LOG = log.get_logger(log.DB)

#: The responses :meth:`Session.send` dumps at debug level, as the reference does (the services log the
#: other messages their own way).
_DUMPED_AT_DEBUG = frozenset({dimse.C_FIND_RSP, dimse.C_MOVE_RSP})


@dataclass(frozen=True)
class StoreSettings:
    """The command-line options the Storage service itself applies."""

    #: ``--ignore``: receive every data set, store none, answer Success
    ignore: bool = False
    #: ``-up``: one trailing space of the UIDs compared with the request is ignored
    uid_padding: bool = False


@dataclass
class Session:
    """One established association and everything its services may use."""

    association: Association
    store: StoreHandler
    find: FindHandler
    retrieve: RetrieveHandler
    move_destinations: MoveDestinations
    sub_associations: SubAssociations
    store_settings: StoreSettings = StoreSettings()
    #: ``-td``: how long to wait for each fragment of a message once it has begun (None: the transport's
    #: 60-s socket timeout, as DCMTK's)
    dimse_timeout: float | None = None
    #: operations performed, by name, for the closing summary line
    operations: Counter[str] = field(default_factory=Counter)

    def send(self, context_id: int, command: dimse.Command, dataset: bytes | None = None) -> None:
        """Send a message (C-FIND and C-MOVE responses are dumped at debug level)."""
        if command["CommandField"] in _DUMPED_AT_DEBUG and LOG.isEnabledFor(logging.DEBUG):
            LOG.debug(dimse.dump(command, incoming=False, dataset_present=dataset is not None))
        self.association.send_message(context_id, command, dataset)


#: A DIMSE service: serves one request (the command that came on the context) to its end.
Service = Callable[[Session, int, dimse.Command], None]
