"""What every association of one server run shares, and the session it builds for each association."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

from qrscp.archive.handlers import (
    AreaFindHandler,
    AreaRetrieveHandler,
    AreaStoreHandler,
)
from qrscp.archive.journal import WriteJournal
from qrscp.archive.storage_area import StorageArea
from qrscp.config.association_profiles import Profile
from qrscp.config.config_file import AEEntry, Config
from qrscp.config.options import Options
from qrscp.dicom.charset import CharsetPolicy, charset_policy
from qrscp.dicom import transcoding
from qrscp.dicom.conversion import OutputFormat
from qrscp.net.association import Association
from qrscp.server.move_destinations import ConfiguredDestinations
from qrscp.server.policy import AssociationPolicy
from qrscp.server.scoreboard import Scoreboard
from qrscp.server.sub_associations import SubAssociationRequester
from qrscp.server.tls_contexts import TLSContexts
from qrscp.services.session import Session, StoreSettings


@dataclass
class ServerContext:
    """The options, configuration and shared tables of a server run, and the storage areas a process
    has open."""

    options: Options
    config: Config
    policy: AssociationPolicy
    #: the table of workers (None with ``-s``)
    scoreboard: Scoreboard | None = None
    #: the index writes of this server's workers (None with ``-s``: one process, nothing to share)
    journal: WriteJournal | None = None
    #: ``-xf``: the profile proposed on C-MOVE sub-associations
    outgoing_profile: Profile | None = None
    #: ``+tls``: the contexts of incoming associations and of sub-associations (None: plain TCP)
    tls: TLSContexts | None = None
    #: called when a peer negotiated the private shutdown SOP class (``--allow-shutdown``)
    request_shutdown: Callable[[], None] = lambda: None
    #: open storage areas by (path, quota): kept across the associations a worker serves, so that
    #: their index caches stay warm (each validates itself against the file at every use)
    areas: dict[tuple[str, int, int], StorageArea] = field(default_factory=dict)

    def area(self, entry: AEEntry) -> StorageArea:
        """The storage area of ``entry`` (the reference's DB handle)."""
        key = (entry.storage_area, entry.max_studies, entry.max_bytes_per_study)
        area = self.areas.get(key)
        if area is None:
            area = self.areas[key] = StorageArea(*key, journal=self.journal)
        return area

    @property
    def max_pdu(self) -> int:
        """Our maximum receive PDU length: ``-pdu``, else the configuration's MaxPDUSize."""
        return self.options.max_pdu or self.config.max_pdu

    @cached_property
    def charset_policy(self) -> CharsetPolicy:
        """How query keys and responses are converted between character sets (:mod:`qrscp.dicom.charset`)."""
        options = self.options
        return charset_policy(self.config.charset_line, options.use_request_charset, options.convert_to,
                              options.transliterate, options.discard_illegal)

    @cached_property
    def output_format(self) -> OutputFormat:
        """How received data sets are written (the storage output options)."""
        options = self.options
        return OutputFormat(write_file=options.write_file, write_xfer=options.write_xfer,
                            bit_preserving=options.bit_preserving, group_length=options.group_length,
                            length_explicit=options.length_explicit, padding=options.padding,
                            enable_new_vr=options.enable_new_vr, compression_level=options.compression_level)

    @cached_property
    def lossy_allowed(self) -> frozenset[str]:
        """The lossy transfer syntaxes the user asked to propose (``-xw``, ``-xu``..., or in the ``-xf``
        outgoing profile): the only ones a retrieval encodes pixel data into (README "Transcoding")."""
        proposed = set(self.options.outgoing_ts)
        if self.outgoing_profile is not None:
            proposed.update(syntax for _sop_class, syntaxes in self.outgoing_profile.contexts for syntax in syntaxes)
        return frozenset(syntax for syntax in proposed if transcoding.is_lossy(syntax))

    def session(self, association: Association, entry: AEEntry) -> Session:
        """The services' view of an association to the AE ``entry``."""
        options = self.options
        area = self.area(entry)
        return Session(
            association=association,
            store=AreaStoreHandler(area, self.output_format, entry.writable),
            find=AreaFindHandler(area, options.check_find, self.charset_policy, association.called_ae_title),
            retrieve=AreaRetrieveHandler(area, options.check_move, self.lossy_allowed),
            move_destinations=ConfiguredDestinations(self.config, options, association.calling_ae_title,
                                                     association.peer_host),
            sub_associations=SubAssociationRequester(options, self.outgoing_profile, association.called_ae_title,
                                                     self.lossy_allowed, self.tls),
            store_settings=StoreSettings(ignore=options.ignore, uid_padding=options.uid_padding),
            dimse_timeout=options.dimse_timeout,
        )
