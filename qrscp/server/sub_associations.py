"""The sub-associations of C-MOVE (docs/association.md §4): what they propose and how they are requested."""
from __future__ import annotations

import socket
from collections.abc import Collection

from qrscp.config.association_profiles import Profile
from qrscp.config.options import Options
from qrscp.dicom import fileformat
from qrscp.dicom.conversion import conversion_cost, is_uncompressed
from qrscp.net import acse, tls
from qrscp.net.association import Association
from qrscp.net.pdu import PresentationContextRQ
from qrscp.services.interfaces import Destination, Instance, SubAssociationFailed
from qrscp.server.tls_contexts import TLSContexts

#: DCMTK proposes its sub-associations with this maximum PDU length (docs/association.md §4).
SUB_ASSOCIATION_MAX_PDU = 16384
#: Presentation context IDs are odd numbers up to 255.
MAX_CONTEXTS = 128


class SubAssociationRequester:
    """Requests the sub-associations of one association's C-MOVEs; they call as its called AE title."""

    def __init__(self, options: Options, outgoing_profile: Profile | None, calling_ae_title: str,
                 lossy_allowed: Collection[str] = (), tls: TLSContexts | None = None) -> None:
        self.options = options
        self.outgoing_profile = outgoing_profile
        self.calling_ae_title = calling_ae_title
        self.lossy_allowed = lossy_allowed
        self.tls = tls

    def proposed_contexts(self, instances: list[Instance]) -> list[PresentationContextRQ]:
        """Per SOP class of ``instances`` (in the order they are met), one context with the ``-x`` transfer
        syntaxes (the reference proposes a fixed list of classes), then one per compressed transfer syntax
        its instances are stored in that the ``-x`` list lacks: that syntax, then the ``-x`` syntaxes it
        can be converted to here, so that the peer's preference decides (README "Transcoding"). At most
        :data:`MAX_CONTEXTS`. With ``-xf`` the outgoing profile's contexts, in its order."""
        profile = self.outgoing_profile
        if profile is not None:
            return [PresentationContextRQ(2 * number + 1, sop_class, list(syntaxes))
                    for number, (sop_class, syntaxes) in enumerate(profile.contexts[:MAX_CONTEXTS])]
        proposed = list(self.options.outgoing_ts)
        stored: dict[str, dict[str, None]] = {}     # SOP class -> its stored syntaxes, in order
        for instance in instances:
            stored.setdefault(instance.sop_class_uid, {})[_stored_syntax(instance)] = None
        contexts = []
        for sop_class, syntaxes in stored.items():
            contexts.append((sop_class, proposed))
            contexts += [(sop_class, [syntax, *(target for target in proposed
                                                if conversion_cost(syntax, target, self.lossy_allowed) is not None)])
                         for syntax in syntaxes if syntax and not is_uncompressed(syntax) and syntax not in proposed]
        return [PresentationContextRQ(2 * number + 1, sop_class, syntaxes)
                for number, (sop_class, syntaxes) in enumerate(contexts[:MAX_CONTEXTS])]

    def request(self, destination: Destination, instances: list[Instance]) -> Association:
        options = self.options
        tls_contexts = self.tls
        try:
            return acse.request_association(
                destination.host, destination.port, calling_ae_title=self.calling_ae_title,
                called_ae_title=destination.ae_title, contexts=self.proposed_contexts(instances),
                max_receive_pdu=SUB_ASSOCIATION_MAX_PDU, connect_timeout=options.connect_timeout,
                acse_timeout=options.acse_timeout,
                roles=self.outgoing_profile.roles if self.outgoing_profile else None,
                ip_family=options.ip_family,
                tls_client=(tls_contexts.client, tls_contexts.request_sni) if tls_contexts is not None else None)
        except tls.TLSFailure as error:
            raise SubAssociationFailed(str(error)) from error
        except socket.gaierror as error:   # DCMTK's DULC_UNKNOWNHOST
            raise SubAssociationFailed(f"0006:0320 Attempt to connect to unknown host: {destination.host}") from error
        except OSError as error:
            if error.strerror:   # as DCMTK words a failed connect
                raise SubAssociationFailed(f"0006:031c TCP Initialization Error: {error.strerror}") from error
            raise SubAssociationFailed(str(error)) from error
        except (acse.AssociationRejected, acse.AssociationFailed) as error:
            raise SubAssociationFailed(str(error)) from error


def _stored_syntax(instance: Instance) -> str:
    """The transfer syntax an instance is stored in ("" if its file cannot be read: its sub-operation will
    say why)."""
    try:
        return fileformat.read_stored_file(instance.location).transfer_syntax
    except (OSError, ValueError):
        return ""
