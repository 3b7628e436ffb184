"""Upper-layer PDUs of PS3.8 §9.3, encoded and decoded with every length checked.

A malformed PDU raises :class:`PDUError`; nothing here allocates more than the bytes actually received,
whatever a length field claims.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from qrscp import log
from qrscp.dicom.elements import raw_bytes, raw_text

LOG = log.get_logger(log.NET)

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

PDU_NAMES = {
    A_ASSOCIATE_RQ: "Associate Request", A_ASSOCIATE_AC: "Associate Accept",
    A_ASSOCIATE_RJ: "Associate Reject", P_DATA_TF: "Data", A_RELEASE_RQ: "Release Request",
    A_RELEASE_RP: "Release Response", A_ABORT: "Abort",
}

# item types (PS3.8 §9.3.2-9.3.3, PS3.7 Annex D)
_APPLICATION_CONTEXT = 0x10
_PRESENTATION_CONTEXT_RQ = 0x20
_PRESENTATION_CONTEXT_AC = 0x21
_ABSTRACT_SYNTAX = 0x30
_TRANSFER_SYNTAX = 0x40
_USER_INFORMATION = 0x50
_MAXIMUM_LENGTH = 0x51
_IMPLEMENTATION_CLASS_UID = 0x52
_ASYNCHRONOUS_OPERATIONS = 0x53
_ROLE_SELECTION = 0x54
_IMPLEMENTATION_VERSION_NAME = 0x55

# presentation context results (PS3.8 Table 9-18)
ACCEPTANCE = 0
USER_REJECTION = 1
NO_REASON = 2
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

_HEADER = struct.Struct(">BBL")
_ITEM = struct.Struct(">BBH")
_PDV = struct.Struct(">LBB")


#: The longest association-phase PDU (A-ASSOCIATE-RQ/AC) accepted, DCMTK's ``dcmAssociatePDUSizeLimit``:
#: 128 contexts with many transfer syntaxes fit easily; anything longer is hostile.
MAX_ASSOCIATE_PDU = 1 << 20


class PDUError(Exception):
    """A PDU or item that does not follow PS3.8 (``str()``: DCMTK's condition text where it has one)."""


class UnknownPDUType(PDUError):
    """A PDU type PS3.8 does not define."""

    def __init__(self, pdu_type: int) -> None:
        super().__init__(f"0006:0321 Unrecognized PDU type: {pdu_type:2x}")
        self.pdu_type = pdu_type


class PDUTooLarge(PDUError):
    """A PDU longer than its kind may be."""

    def __init__(self, pdu_type: int, length: int, limit: int) -> None:
        if pdu_type == A_ASSOCIATE_RQ:
            super().__init__("0006:0437 A-ASSOCIATE PDU too large")
        else:
            super().__init__(f"{PDU_NAMES[pdu_type]} PDU of {length} bytes exceeds the maximum {limit}")
        self.pdu_type, self.length = pdu_type, length


def check_header(pdu_type: int, length: int, max_data_length: int) -> None:
    """Raise :class:`UnknownPDUType` or :class:`PDUTooLarge` for a header whose PDU must not be read
    (``max_data_length`` bounds P-DATA-TF, :data:`MAX_ASSOCIATE_PDU` the others)."""
    if pdu_type not in PDU_NAMES:
        raise UnknownPDUType(pdu_type)
    limit = max_data_length if pdu_type == P_DATA_TF else MAX_ASSOCIATE_PDU
    if length > limit:
        raise PDUTooLarge(pdu_type, length, limit)


@dataclass
class PresentationContextRQ:
    """A proposed presentation context."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]


@dataclass
class PresentationContextAC:
    """The answer to one proposed presentation context."""

    context_id: int
    result: int
    transfer_syntax: str = ""


@dataclass
class AssociateRQ:
    """A-ASSOCIATE-RQ (also the shape of the parameters we propose as a requestor)."""

    called_ae_title: str
    calling_ae_title: str
    contexts: list[PresentationContextRQ]
    application_context: str = ""
    protocol_version: int = 1
    max_pdu_length: int = 0  # 0 means no limit
    implementation_class_uid: str = ""
    implementation_version_name: str = ""
    #: abstract syntax -> (SCU role, SCP role) proposed by the requestor
    roles: dict[str, tuple[bool, bool]] = field(default_factory=dict)


@dataclass
class AssociateAC:
    """A-ASSOCIATE-AC."""

    called_ae_title: str
    calling_ae_title: str
    contexts: list[PresentationContextAC]
    application_context: str
    max_pdu_length: int
    implementation_class_uid: str
    implementation_version_name: str = ""
    roles: dict[str, tuple[bool, bool]] = field(default_factory=dict)


def _uid(raw: bytes) -> str:
    return raw_text(raw.rstrip(b"\x00 "))


def _ae_title(raw: bytes) -> str:
    return raw_text(raw).strip(" \x00")


def _items(body: bytes, start: int = 0):
    """Yield (item type, item value) over the items of ``body[start:]``."""
    offset = start
    end = len(body)
    while offset < end:
        if offset + 4 > end:
            raise PDUError("truncated item header")
        item_type, _, length = _ITEM.unpack_from(body, offset)
        offset += 4
        if offset + length > end:
            raise PDUError(f"item 0x{item_type:02x} longer than its PDU")
        yield item_type, body[offset:offset + length]
        offset += length


def decode_associate_rq(body: bytes) -> AssociateRQ:
    """Decode the variable part of an A-ASSOCIATE-RQ (everything after the 6-byte PDU header)."""
    if len(body) < 68:
        raise PDUError("A-ASSOCIATE-RQ too short")
    protocol_version = struct.unpack_from(">H", body, 0)[0]
    rq = AssociateRQ(called_ae_title=_ae_title(body[4:20]), calling_ae_title=_ae_title(body[20:36]),
                     contexts=[], protocol_version=protocol_version)
    for item_type, value in _items(body, 68):
        if item_type == _APPLICATION_CONTEXT:
            rq.application_context = _uid(value)
        elif item_type == _PRESENTATION_CONTEXT_RQ:
            if len(value) < 4:
                raise PDUError("presentation context item too short")
            context = PresentationContextRQ(value[0], "", [])
            for sub_type, sub_value in _items(value, 4):
                if sub_type == _ABSTRACT_SYNTAX:
                    context.abstract_syntax = _uid(sub_value)
                elif sub_type == _TRANSFER_SYNTAX:
                    context.transfer_syntaxes.append(_uid(sub_value))
            rq.contexts.append(context)
        elif item_type == _USER_INFORMATION:
            _decode_user_information(value, rq)
    for uid, (scu, scp) in rq.roles.items():
        if not (scu or scp):    # as DCMTK reads a request
            LOG.warning("DULFSM: both role fields are 0 in SCP/SCU role selection sub-item")
            rq.roles[uid] = (True, True)
    return rq


def _decode_user_information(value: bytes, target: AssociateRQ | AssociateAC) -> None:
    for sub_type, sub_value in _items(value):
        if sub_type == _MAXIMUM_LENGTH:
            if len(sub_value) != 4:
                raise PDUError("maximum length item of wrong length")
            target.max_pdu_length = struct.unpack(">L", sub_value)[0]
        elif sub_type == _IMPLEMENTATION_CLASS_UID:
            target.implementation_class_uid = _uid(sub_value)
        elif sub_type == _IMPLEMENTATION_VERSION_NAME:
            target.implementation_version_name = raw_text(sub_value).strip()
        elif sub_type == _ROLE_SELECTION:
            if len(sub_value) < 4:
                raise PDUError("role selection item too short")
            uid_length = struct.unpack_from(">H", sub_value, 0)[0]
            if 2 + uid_length + 2 != len(sub_value):
                raise PDUError("role selection item of wrong length")
            uid = _uid(sub_value[2:2 + uid_length])
            target.roles[uid] = (bool(sub_value[-2]), bool(sub_value[-1]))


def decode_associate_ac(body: bytes) -> AssociateAC:
    """Decode the variable part of an A-ASSOCIATE-AC."""
    if len(body) < 68:
        raise PDUError("A-ASSOCIATE-AC too short")
    ac = AssociateAC(called_ae_title=_ae_title(body[4:20]), calling_ae_title=_ae_title(body[20:36]),
                     contexts=[], application_context="", max_pdu_length=0, implementation_class_uid="")
    for item_type, value in _items(body, 68):
        if item_type == _APPLICATION_CONTEXT:
            ac.application_context = _uid(value)
        elif item_type == _PRESENTATION_CONTEXT_AC:
            if len(value) < 4:
                raise PDUError("presentation context item too short")
            context = PresentationContextAC(value[0], value[2])
            for sub_type, sub_value in _items(value, 4):
                if sub_type == _TRANSFER_SYNTAX:
                    context.transfer_syntax = _uid(sub_value)
            ac.contexts.append(context)
        elif item_type == _USER_INFORMATION:
            _decode_user_information(value, ac)
    return ac


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return _HEADER.pack(pdu_type, 0, len(body)) + body


def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise PDUError(f"item 0x{item_type:02x} too long")
    return _ITEM.pack(item_type, 0, len(value)) + value


def _uid_bytes(uid: str) -> bytes:
    return raw_bytes(uid)


def _ae_bytes(title: str) -> bytes:
    return raw_bytes(title)[:16].ljust(16, b" ")


def _user_information(max_pdu_length: int, class_uid: str, version_name: str,
                      roles: dict[str, tuple[bool, bool]]) -> bytes:
    value = _item(_MAXIMUM_LENGTH, struct.pack(">L", max_pdu_length))
    value += _item(_IMPLEMENTATION_CLASS_UID, _uid_bytes(class_uid))
    for uid, (scu, scp) in roles.items():
        encoded = _uid_bytes(uid)
        value += _item(_ROLE_SELECTION, struct.pack(">H", len(encoded)) + encoded + bytes((scu, scp)))
    if version_name:
        value += _item(_IMPLEMENTATION_VERSION_NAME, raw_bytes(version_name)[:16])
    return _item(_USER_INFORMATION, value)


def _associate_header(protocol_version: int, called: str, calling: str) -> bytes:
    return struct.pack(">HH", protocol_version, 0) + _ae_bytes(called) + _ae_bytes(calling) + bytes(32)


def encode_associate_rq(rq: AssociateRQ) -> bytes:
    """The complete A-ASSOCIATE-RQ PDU."""
    body = _associate_header(1, rq.called_ae_title, rq.calling_ae_title)
    body += _item(_APPLICATION_CONTEXT, _uid_bytes(rq.application_context))
    for context in rq.contexts:
        value = bytes((context.context_id, 0, 0, 0)) + _item(_ABSTRACT_SYNTAX, _uid_bytes(context.abstract_syntax))
        value += b"".join(_item(_TRANSFER_SYNTAX, _uid_bytes(ts)) for ts in context.transfer_syntaxes)
        body += _item(_PRESENTATION_CONTEXT_RQ, value)
    body += _user_information(rq.max_pdu_length, rq.implementation_class_uid,
                              rq.implementation_version_name, rq.roles)
    return _pdu(A_ASSOCIATE_RQ, body)


def encode_associate_ac(ac: AssociateAC) -> bytes:
    """The complete A-ASSOCIATE-AC PDU."""
    body = _associate_header(1, ac.called_ae_title, ac.calling_ae_title)
    body += _item(_APPLICATION_CONTEXT, _uid_bytes(ac.application_context))
    for context in ac.contexts:
        value = bytes((context.context_id, 0, context.result, 0))
        # PS3.8 §9.3.3.2: the transfer syntax sub-item is present but not significant when rejected
        value += _item(_TRANSFER_SYNTAX, _uid_bytes(context.transfer_syntax))
        body += _item(_PRESENTATION_CONTEXT_AC, value)
    body += _user_information(ac.max_pdu_length, ac.implementation_class_uid,
                              ac.implementation_version_name, ac.roles)
    return _pdu(A_ASSOCIATE_AC, body)


def encode_associate_rj(result: int, source: int, reason: int) -> bytes:
    """The complete A-ASSOCIATE-RJ PDU."""
    return _pdu(A_ASSOCIATE_RJ, bytes((0, result, source, reason)))


def decode_associate_rj(body: bytes) -> tuple[int, int, int]:
    """(result, source, reason) of an A-ASSOCIATE-RJ."""
    if len(body) != 4:
        raise PDUError("A-ASSOCIATE-RJ of wrong length")
    return body[1], body[2], body[3]


def encode_abort(source: int = 0, reason: int = 0) -> bytes:
    """The complete A-ABORT PDU (source 0 = service user, 2 = service provider)."""
    return _pdu(A_ABORT, bytes((0, 0, source, reason)))


RELEASE_RQ = _pdu(A_RELEASE_RQ, bytes(4))
RELEASE_RP = _pdu(A_RELEASE_RP, bytes(4))


def pdv_header(data_length: int, context_id: int, control: int) -> bytes:
    """PDU header and PDV header of a P-DATA-TF carrying one PDV of ``data_length`` bytes.

    ``control`` is the message control header: bit 0 set for a command, bit 1 set on the last fragment.
    """
    return _HEADER.pack(P_DATA_TF, 0, data_length + 6) + _PDV.pack(data_length + 2, context_id, control)


def decode_p_data(body: bytes | memoryview):
    """Yield (context id, message control header, data) for each PDV of a P-DATA-TF body."""
    offset = 0
    end = len(body)
    if end == 0:
        raise PDUError("P-DATA-TF without PDV")
    while offset < end:
        if offset + 6 > end:
            raise PDUError("truncated PDV header")
        length, context_id, control = _PDV.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            raise PDUError("PDV length does not fit its PDU")
        yield context_id, control, body[offset + 6:offset + 4 + length]
        offset += 4 + length


HEADER_SIZE = _HEADER.size


def decode_header(header: bytes) -> tuple[int, int]:
    """(PDU type, length of the variable part) from the 6-byte PDU header."""
    pdu_type, _, length = _HEADER.unpack(header)
    return pdu_type, length
