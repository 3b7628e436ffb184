"""C-MOVE destinations from the configuration, restricted by ``-ZA``, ``-ZH`` and ``-ZV`` (docs/association.md §4)."""
from __future__ import annotations

import logging

from qrscp.config.config_file import Config
from qrscp.config.options import Options
from qrscp.dicom.status import MOVE_DESTINATION_UNKNOWN
from qrscp.services.interfaces import Destination, RequestFailed


class ConfiguredDestinations:
    """The destinations one requestor may move to: AETable peers first, then the HostTable."""

    def __init__(self, config: Config, options: Options, requestor_ae_title: str, requestor_host: str) -> None:
        self.config = config
        self.options = options
        self.requestor_ae_title = requestor_ae_title
        self.requestor_host = requestor_host

    def resolve(self, move_destination: str) -> Destination:
        def refuse(message: str) -> RequestFailed:
            return RequestFailed(MOVE_DESTINATION_UNKNOWN, message, logging.INFO)

        options, calling = self.options, self.requestor_ae_title
        if options.move_aetitle and move_destination != calling:
            raise refuse(f"mapMoveDestination: strictMove Reqs: '{calling}' != '{move_destination}'")
        peer = self.config.peer_for_ae_title(move_destination)
        if peer is None:
            raise refuse(f"mapMoveDestination: unknown AE: '{move_destination}'")
        if options.move_host and peer.host != self.requestor_host:
            raise refuse(f"mapMoveDestination: different hosts: '{self.requestor_host}', '{peer.host}'")
        if options.move_vendor and not self.config.same_vendor(calling, move_destination):
            raise refuse(f"mapMoveDestination: different vendors: '{calling}', '{move_destination}'")
        return Destination(move_destination, peer.host, peer.port)
