"""Association policy (docs/association.md §1-§2, differences.md #8-#10): who may associate, which contexts we accept.

:meth:`AssociationPolicy.screen` applies the checks that precede negotiation, in the reference's order;
:meth:`AssociationPolicy.negotiate` answers every proposed presentation context.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from qrscp import log
from qrscp.config import association_profiles as assocconfig
from qrscp.config.association_profiles import Profile
from qrscp.config.config_file import AEEntry, Config
from qrscp.config.options import Options
from qrscp.dicom import uids
from qrscp.net import pdu
from qrscp.net.pdu import AssociateRQ, PresentationContextAC, PresentationContextRQ

LOG = log.get_logger(log.DB)

# A-ASSOCIATE-RJ parameters (PS3.8 Table 9-21)
REJECTED_PERMANENT = 1
REJECTED_TRANSIENT = 2
SOURCE_SERVICE_USER = 1
SOURCE_ACSE = 2
SOURCE_PRESENTATION = 3
REASON_NO_REASON = 1
REASON_APPLICATION_CONTEXT = 2
REASON_CALLING_AE = 3
REASON_CALLED_AE = 7
REASON_PROTOCOL_VERSION = 2
REASON_LOCAL_LIMIT = 2


@dataclass(frozen=True)
class Rejection:
    """Send an A-ASSOCIATE-RJ with these parameters (``log_reason`` names it in the log)."""

    result: int
    source: int
    reason: int
    log_reason: str


class AssociationRefused(Exception):
    """The association is to be rejected with :attr:`rejection`."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.log_reason)
        self.rejection = rejection


class AssociationDropped(Exception):
    """The connection is to be closed without any PDU (what the reference does for some malformed requests)."""


@dataclass
class Negotiation:
    """The answer to every proposed context, and what follows from it."""

    results: list[PresentationContextAC]
    roles: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    shutdown: bool = False
    has_storage: bool = False

    @property
    def accepted(self) -> list[PresentationContextAC]:
        return [result for result in self.results if result.result == pdu.ACCEPTANCE]


NO_REASON = Rejection(REJECTED_PERMANENT, SOURCE_SERVICE_USER, REASON_NO_REASON, "NoReason")
PROTOCOL_VERSION_NOT_SUPPORTED = Rejection(REJECTED_PERMANENT, SOURCE_ACSE, REASON_PROTOCOL_VERSION, "NoReason")
BAD_APPLICATION_CONTEXT = Rejection(REJECTED_TRANSIENT, SOURCE_SERVICE_USER, REASON_APPLICATION_CONTEXT,
                                    "BadAppContext")
CALLED_AE_NOT_RECOGNIZED = Rejection(REJECTED_PERMANENT, SOURCE_SERVICE_USER, REASON_CALLED_AE, "BadAEService")
CALLING_AE_NOT_RECOGNIZED = Rejection(REJECTED_PERMANENT, SOURCE_SERVICE_USER, REASON_CALLING_AE, "BadAEPeer")
TOO_MANY_ASSOCIATIONS = Rejection(REJECTED_TRANSIENT, SOURCE_PRESENTATION, REASON_LOCAL_LIMIT, "TooManyAssociations")


class AssociationPolicy:
    """The association rules of one server run (options and configuration)."""

    def __init__(self, options: Options, config: Config, incoming_profile: Profile | None = None) -> None:
        self.options = options
        self.config = config
        #: ``-xf``: the profile that replaces the storage negotiation
        self.incoming_profile = incoming_profile
        self.preferred = list(options.incoming_ts)
        services = {uids.VERIFICATION}
        for disabled, models in ((options.no_patient_root, uids.PATIENT_ROOT_MODELS),
                                 (options.no_study_root, uids.STUDY_ROOT_MODELS),
                                 (options.no_patient_study, uids.PATIENT_STUDY_ONLY_MODELS)):
            if not disabled:
                services.update(models)
        if options.disable_get:
            services.difference_update(uids.GET_MODELS)
        if options.allow_shutdown:
            services.add(uids.PRIVATE_SHUTDOWN)
        self.services = frozenset(services)

    def screen(self, rq: AssociateRQ, peer_host: str) -> None:
        """The checks before negotiation (docs/association.md §1 steps 3-6). Raises :class:`AssociationRefused` or
        :class:`AssociationDropped` when the association may not proceed."""
        if not rq.calling_ae_title or not rq.contexts or any(not c.transfer_syntaxes for c in rq.contexts):
            raise AssociationDropped()
        if not rq.protocol_version & 0x0001:
            raise AssociationRefused(PROTOCOL_VERSION_NOT_SUPPORTED)
        if self.options.refuse:
            LOG.info("Refusing Association (forced via command line)")
            raise AssociationRefused(NO_REASON)
        if rq.application_context != uids.APPLICATION_CONTEXT:
            LOG.info("Bad AppContextName: %s", rq.application_context)
            raise AssociationRefused(BAD_APPLICATION_CONTEXT)
        if self.options.reject and not rq.implementation_class_uid:
            LOG.info("No implementation Class UID provided")
            raise AssociationRefused(NO_REASON)
        entry = self.config.ae_entry(rq.called_ae_title)
        if entry is None:
            LOG.debug("Called AE title %s is not in the AETable (see configuration file)", rq.called_ae_title)
            raise AssociationRefused(CALLED_AE_NOT_RECOGNIZED)
        if not self.config.peer_in_ae_title(rq.called_ae_title, rq.calling_ae_title, peer_host):
            LOG.info("Peer %s:%s is not permitted to access %s (see configuration file)",
                     peer_host, rq.calling_ae_title, rq.called_ae_title)
            raise AssociationRefused(CALLING_AE_NOT_RECOGNIZED)

    def _answer_from_profile(self, context: PresentationContextRQ, proposed_role: tuple[bool, bool] | None
                             ) -> tuple[int, str, tuple[bool, bool] | None]:
        """(result, transfer syntax, role item) for a context under ``-xf`` (as DCMTK answers it).

        The profile decides first; then the usual pass over the non-storage services accepts their
        abstract syntaxes with the default preferences and roles, whatever the profile said.
        """
        profile = self.incoming_profile
        syntax = context.abstract_syntax
        transfer_syntax = assocconfig.accepted_transfer_syntax(profile, syntax, context.transfer_syntaxes) or ""
        role = assocconfig.accepted_role(profile, syntax, proposed_role)
        if profile.transfer_syntaxes(syntax) is None:
            result, item = pdu.ABSTRACT_SYNTAX_NOT_SUPPORTED, None
        elif not transfer_syntax:
            result, item = pdu.TRANSFER_SYNTAXES_NOT_SUPPORTED, None
        elif role.acceptable:
            result, item = pdu.ACCEPTANCE, role.item
        else:
            result, item = pdu.USER_REJECTION, None
        if syntax in self.services:
            preferred = next((ts for ts in self.preferred if ts in context.transfer_syntaxes), "")
            if preferred:
                return pdu.ACCEPTANCE, preferred, None
            return (pdu.ACCEPTANCE, transfer_syntax, item) if result == pdu.ACCEPTANCE else \
                (pdu.TRANSFER_SYNTAXES_NOT_SUPPORTED, "", None)
        if result == pdu.USER_REJECTION:
            result = pdu.ABSTRACT_SYNTAX_NOT_SUPPORTED
        return result, transfer_syntax if result == pdu.ACCEPTANCE else "", item

    def negotiate(self, rq: AssociateRQ, entry: AEEntry, parallel_store_busy: bool) -> Negotiation:
        """Answer each proposed context (docs/association.md §2, with docs/differences.md #9, #10).

        ``parallel_store_busy``: another live association to the same AE holds storage contexts
        (``--no-parallel-store``).
        """
        results: list[PresentationContextAC] = []
        roles: dict[str, tuple[bool, bool]] = {}
        storage_ids: set[int] = set()
        for context in rq.contexts:
            syntax = context.abstract_syntax
            if self.incoming_profile is not None:
                result, transfer_syntax, role = self._answer_from_profile(context, rq.roles.get(syntax))
                if role is not None:
                    roles[syntax] = role
                if result == pdu.ACCEPTANCE and syntax in uids.STORAGE_SOP_CLASSES:
                    storage_ids.add(context.context_id)
                results.append(PresentationContextAC(context.context_id, result, transfer_syntax))
                continue
            transfer_syntax = next((ts for ts in self.preferred if ts in context.transfer_syntaxes), None)
            if syntax in self.services:
                result = pdu.ACCEPTANCE if transfer_syntax else pdu.TRANSFER_SYNTAXES_NOT_SUPPORTED
            elif syntax in uids.STORAGE_SOP_CLASSES:
                result = pdu.ACCEPTANCE if transfer_syntax else pdu.TRANSFER_SYNTAXES_NOT_SUPPORTED
                if result == pdu.ACCEPTANCE:
                    storage_ids.add(context.context_id)
                    if syntax in rq.roles and not self.options.disable_get:
                        roles[syntax] = rq.roles[syntax]
            else:
                result = pdu.ABSTRACT_SYNTAX_NOT_SUPPORTED
            results.append(PresentationContextAC(context.context_id, result, transfer_syntax or ""))
        negotiation = Negotiation(results, roles)
        by_id = {context.context_id: context.abstract_syntax for context in rq.contexts}

        def refuse(result: PresentationContextAC) -> None:
            result.result = pdu.USER_REJECTION

        accepted_syntaxes = {by_id[r.context_id] for r in negotiation.accepted}
        if uids.PRIVATE_SHUTDOWN in accepted_syntaxes:
            negotiation.shutdown = True
            return negotiation
        for result in negotiation.accepted:
            syntax = by_id[result.context_id]
            if result.context_id in storage_ids:
                requestor_scu, requestor_scp = roles.get(syntax, (True, False))
                get_receive_only = requestor_scp and not requestor_scu
                if not entry.writable and not get_receive_only:
                    refuse(result)
                elif parallel_store_busy and entry.writable and self.options.no_parallel_store:
                    refuse(result)
            elif syntax in uids.FIND_FOR_RETRIEVE and uids.FIND_FOR_RETRIEVE[syntax] not in accepted_syntaxes:
                is_move = syntax in uids.MOVE_MODELS
                if self.options.require_find:
                    refuse(result)
                elif is_move:
                    LOG.error("Move Presentation Context but no Find (accepting for now)")
        negotiation.has_storage = any(r.context_id in storage_ids for r in negotiation.accepted)
        return negotiation
