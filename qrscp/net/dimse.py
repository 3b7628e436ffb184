"""DIMSE command sets (PS3.7 §9.3, §E): a lean codec for group 0000, and DCMTK-style message dumps.

Command sets are always implicit VR little endian and hold a small fixed set of elements, so they are
encoded and decoded here directly, without a general DICOM parser: this sits on the per-message path.
"""
from __future__ import annotations

import struct
from typing import Any

from qrscp import log
from qrscp.dicom import uids
from qrscp.dicom.elements import raw_bytes, raw_text

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_GET_RQ = 0x0010
C_GET_RSP = 0x8010
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
C_CANCEL_RQ = 0x0FFF

MESSAGE_NAMES = {
    C_STORE_RQ: "C-STORE RQ", C_STORE_RSP: "C-STORE RSP", C_GET_RQ: "C-GET RQ", C_GET_RSP: "C-GET RSP",
    C_FIND_RQ: "C-FIND RQ", C_FIND_RSP: "C-FIND RSP", C_MOVE_RQ: "C-MOVE RQ", C_MOVE_RSP: "C-MOVE RSP",
    C_ECHO_RQ: "C-ECHO RQ", C_ECHO_RSP: "C-ECHO RSP", C_CANCEL_RQ: "C-CANCEL RQ",
}

#: CommandDataSetType value meaning "no data set follows".
NO_DATASET = 0x0101
DATASET_PRESENT = 0x0000

# keyword -> (element number in group 0000, VR)
_ELEMENTS: dict[str, tuple[int, str]] = {
    "AffectedSOPClassUID": (0x0002, "UI"),
    "RequestedSOPClassUID": (0x0003, "UI"),
    "CommandField": (0x0100, "US"),
    "MessageID": (0x0110, "US"),
    "MessageIDBeingRespondedTo": (0x0120, "US"),
    "MoveDestination": (0x0600, "AE"),
    "Priority": (0x0700, "US"),
    "CommandDataSetType": (0x0800, "US"),
    "Status": (0x0900, "US"),
    "OffendingElement": (0x0901, "AT"),
    "ErrorComment": (0x0902, "LO"),
    "ErrorID": (0x0903, "US"),
    "AffectedSOPInstanceUID": (0x1000, "UI"),
    "RequestedSOPInstanceUID": (0x1001, "UI"),
    "NumberOfRemainingSuboperations": (0x1020, "US"),
    "NumberOfCompletedSuboperations": (0x1021, "US"),
    "NumberOfFailedSuboperations": (0x1022, "US"),
    "NumberOfWarningSuboperations": (0x1023, "US"),
    "MoveOriginatorApplicationEntityTitle": (0x1030, "AE"),
    "MoveOriginatorMessageID": (0x1031, "US"),
}
_BY_ELEMENT = {element: (keyword, vr) for keyword, (element, vr) in _ELEMENTS.items()}
_ORDER = {keyword: element for keyword, (element, _vr) in _ELEMENTS.items()}

#: The longest value of a command element of each VR (DCMTK's ``DIC_UI_LEN``, ``DIC_AE_LEN``): a longer one
#: makes the command unparsable.
_MAX_VALUE = {"UI": 64, "AE": 16, "LO": 64}

_ELEMENT_HEADER = struct.Struct("<HHL")

#: N-EVENT-REPORT, N-GET, N-SET, N-ACTION, N-CREATE and N-DELETE, requests and responses: commands DIMSE
#: knows, and dcmqrscp refuses to handle.
N_COMMANDS = frozenset(code | response for code in range(0x0100, 0x0160, 0x10) for response in (0, 0x8000))
_COMMON_RQ = ("MessageID", "CommandDataSetType")
_COMMON_RSP = ("MessageIDBeingRespondedTo", "CommandDataSetType", "Status")
#: The elements each command must have, in the order DCMTK's ``DIMSE_parseCmdObject`` looks for them.
_REQUIRED: dict[int, tuple[str, ...]] = {
    C_ECHO_RQ: _COMMON_RQ + ("AffectedSOPClassUID",),
    C_STORE_RQ: _COMMON_RQ + ("AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority"),
    C_FIND_RQ: _COMMON_RQ + ("AffectedSOPClassUID", "Priority"),
    C_GET_RQ: _COMMON_RQ + ("AffectedSOPClassUID", "Priority"),
    C_MOVE_RQ: _COMMON_RQ + ("AffectedSOPClassUID", "Priority", "MoveDestination"),
    C_CANCEL_RQ: ("MessageIDBeingRespondedTo", "CommandDataSetType"),
    **{response: _COMMON_RSP for response in (C_ECHO_RSP, C_STORE_RSP, C_FIND_RSP, C_MOVE_RSP, C_GET_RSP)},
    **{command: () for command in N_COMMANDS},
}

#: DCMTK's condition text for a command set that does not parse at all.
_UNPARSABLE = "0006:020b DIMSE_parseCmdObject: Missing CommandField"

LOG = log.get_logger(log.DATA)


class DIMSEError(Exception):
    """A command set that DCMTK's DIMSE would not parse; ``str()`` is DCMTK's condition text for it."""


Command = dict[str, Any]


def _parse_failed(keyword: str, reason: str = "") -> DIMSEError:
    element = _ELEMENTS[keyword][0]
    return DIMSEError(f"0006:020b DIMSE: Command Parse Failed: {reason}Element: (0000,{element:04x}) {keyword}")


def encode_command(command: Command) -> bytes:
    """The command set ``command`` (keyword -> value) in implicit VR little endian, with its group length.
    String values are written byte for byte as they were received (see :func:`~qrscp.dicom.elements.raw_text`)."""
    body = bytearray()
    for keyword in sorted(command, key=_ORDER.__getitem__):
        element, vr = _ELEMENTS[keyword]
        value = command[keyword]
        if vr == "US":
            raw = struct.pack("<H", value)
        elif vr == "AT":
            raw = struct.pack("<HH", value >> 16, value & 0xFFFF)
        else:
            raw = raw_bytes(value)
            if len(raw) % 2:
                raw += b"\x00" if vr == "UI" else b" "
        body += _ELEMENT_HEADER.pack(0x0000, element, len(raw)) + raw
    return _ELEMENT_HEADER.pack(0x0000, 0x0000, 4) + struct.pack("<L", len(body)) + body


def _elements(data: bytes | bytearray) -> dict[int, bytes]:
    """The group 0000 elements of a command set (element number -> raw value); the first of a repeated
    element is kept, with DCMTK's warning. Raises DIMSEError if the command set does not parse."""
    elements: dict[int, bytes] = {}
    offset = 0
    end = len(data)
    while offset < end:
        if offset + 8 > end:
            raise DIMSEError(_UNPARSABLE)
        group, element, length = _ELEMENT_HEADER.unpack_from(data, offset)
        offset += 8
        if group != 0x0000 or offset + length > end:
            raise DIMSEError(_UNPARSABLE)
        raw = bytes(data[offset:offset + length])
        offset += length
        known = _BY_ELEMENT.get(element)
        if known is not None and known[1] == "US" and length % 2:
            raise DIMSEError(_UNPARSABLE)    # DCMTK cannot read the command set at all
        if element in elements:
            LOG.warning("DcmItem: Element (0000,%04x) found twice in one data set or item, ignoring second entry",
                        element)
            continue
        elements[element] = raw
    return elements


def _value(keyword: str, vr: str, raw: bytes) -> object | None:
    """The value of a command element as DIMSE reads it; None for an empty US (no value)."""
    if vr == "US":
        return struct.unpack_from("<H", raw)[0] if raw else None   # the first of several, as DCMTK
    if vr == "AT":
        if len(raw) != 4:
            raise _parse_failed(keyword)
        group_number, element_number = struct.unpack("<HH", raw)
        return (group_number << 16) | element_number
    if len(raw) > _MAX_VALUE[vr]:
        raise _parse_failed(keyword, "dimcmd:getString: string too small: ")
    return raw_text(raw.rstrip(b"\x00").strip(b" "))


def decode_command(data: bytes | bytearray) -> Command:
    """Decode a command set as DCMTK's DIMSE does: unknown group-0000 elements are skipped, the first of a
    repeated element counts, a missing required element or an unknown command field is an error
    (DIMSEError with DCMTK's condition text). UIDs and AE titles keep every byte they came with."""
    elements = _elements(data)
    command: Command = {}
    for element, raw in elements.items():
        known = _BY_ELEMENT.get(element)
        if known is not None:
            value = _value(known[0], known[1], raw)
            if value is not None:
                command[known[0]] = value
    field = command.get("CommandField")
    if field is None:
        raise DIMSEError(_UNPARSABLE)
    required = _REQUIRED.get(field)
    if required is None:
        raise DIMSEError(f"0006:0201 DIMSE_parseCmdObject: Invalid Command Message: 0x{field:x}")
    for keyword in required:
        if keyword not in command:
            raise _parse_failed(keyword)
    return command


def has_dataset(command: Command) -> bool:
    """True if the message carries a data set (CommandDataSetType other than 0x0101)."""
    return command.get("CommandDataSetType", NO_DATASET) != NO_DATASET


#: Names of statuses: single values, then (low, high, name) ranges.
_StatusTable = tuple[dict[int, str], tuple[tuple[int, int, str], ...]]

#: How DCMTK names statuses in its log lines (``DU_cstoreStatusString`` & co., read from libdcmnet 3.6.7):
#: per kind of request, single values, then ranges; another status is ``Unknown Status: 0x...``.
_LOG_STATUS: dict[int, _StatusTable] = {
    C_ECHO_RQ: ({0x0000: "Success"}, ()),
    C_STORE_RQ: ({0x0000: "Success", 0x0122: "Refused: SOPClassNotSupported", 0xB000: "Warning: CoercionOfDataElements",
                  0xB006: "Warning: ElementsDiscarded", 0xB007: "Warning: DataSetDoesNotMatchSOPClass"},
                 ((0xA700, 0xA7FF, "Refused: OutOfResources"), (0xA900, 0xA9FF, "Error: DataSetDoesNotMatchSOPClass"),
                  (0xC000, 0xCFFF, "Error: CannotUnderstand"))),
    C_FIND_RQ: ({0x0000: "Success", 0xFF00: "Pending", 0xFF01: "Pending: WarningUnsupportedOptionalKeys",
                 0xFE00: "Cancel: MatchingTerminatedDueToCancelRequest", 0x0122: "Refused: SOPClassNotSupported",
                 0xA700: "Refused: OutOfResources", 0xA900: "Error: DataSetDoesNotMatchSOPClass"},
                ((0xC000, 0xCFFF, "Failed: UnableToProcess"),)),
}
_LOG_STATUS[C_GET_RQ] = ({0x0000: "Success", 0xFF00: "Pending", 0x0122: "Refused: SOPClassNotSupported",
                          0xFE00: "Cancel: SubOperationsTerminatedDueToCancelIndication",
                          0xA701: "Refused: OutOfResourcesNumberOfMatches",
                          0xA702: "Refused: OutOfResourcesSubOperations", 0xA900: "Error: DataSetDoesNotMatchSOPClass",
                          0xB000: "Warning: SubOperationsCompleteOneOrMoreFailures"},
                         ((0xC000, 0xCFFF, "Failed: UnableToProcess"),))
_LOG_STATUS[C_MOVE_RQ] = ({**_LOG_STATUS[C_GET_RQ][0], 0xA801: "Refused: MoveDestinationUnknown"},
                          _LOG_STATUS[C_GET_RQ][1])


def _look_up(table: _StatusTable, status: int) -> str | None:
    values, ranges = table
    return values.get(status) or next((name for low, high, name in ranges if low <= status <= high), None)


def status_name(command_field: int, status: int) -> str:
    """How DCMTK's log lines name ``status`` of the operation ``command_field`` (request or response):
    ``Failed: UnableToProcess``, ``Refused: MoveDestinationUnknown``..."""
    name = _look_up(_LOG_STATUS.get(command_field & 0x7FFF, ({}, ())), status)
    return name or f"Unknown Status: 0x{status:x}"


#: The C-MOVE response statuses as dumps name them (C-GET's: the same but two, see _DUMP_STATUS).
_MOVE_STATUS = {
    0x0000: "Success: Sub-operations complete - No failures or warnings",
    0xFF00: "Pending: Sub-operations are continuing",
    0xFE00: "Cancel: Sub-operations terminated due to Cancel Indication",
    0xA701: "Refused: Out of resources - Unable to calculate number of matches",
    0xA702: "Refused: Out of resources - Unable to perform sub-operations",
    0xA801: "Refused: Move Destination unknown", 0xA900: "Error: Data Set does not match SOP Class",
    0x0122: "Refused: SOP Class not supported", 0x0124: "Refused: Not authorized",
    0xB000: "Warning: Sub-operations complete - One or more failures or warnings",
}

#: How DCMTK's message dumps name the status of each kind of response: single values, then ranges;
#: another status is named by its category (:func:`_category`). Read off DCMTK 3.6.7's dumps.
_DUMP_STATUS: dict[int, _StatusTable] = {
    C_STORE_RSP: ({0x0000: "Success", 0x0122: "Refused: SOP Class not supported", 0x0124: "Refused: Not authorized",
                   0xB000: "Warning: Coercion of Data Elements", 0xB006: "Warning: Elements discarded",
                   0xB007: "Warning: Data Set does not match SOP Class"},
                  ((0xA700, 0xA7FF, "Refused: Out of resources"),
                   (0xA900, 0xA9FF, "Error: Data Set does not match SOP Class"),
                   (0xC000, 0xCFFF, "Error: Cannot understand"))),
    C_FIND_RSP: ({0x0000: "Success: Matching is complete", 0xFF00: "Pending: Matches are continuing",
                  0xFF01: "Pending: Matches are continuing - Warning: Unsupported optional keys",
                  0xFE00: "Cancel: Matching terminated due to Cancel Request", 0xA700: "Refused: Out of resources",
                  0x0122: "Refused: SOP Class not supported"},
                 ((0xA900, 0xA9FF, "Error: Data Set does not match SOP Class"),
                  (0xC000, 0xCFFF, "Failed: Unable to process"))),
    C_MOVE_RSP: (_MOVE_STATUS, ((0xC000, 0xCFFF, "Failed: Unable to process"),)),
    C_GET_RSP: ({status: text for status, text in _MOVE_STATUS.items() if status not in (0xA801, 0x0124)},
                ((0xC000, 0xCFFF, "Failed: Unable to process"),)),
}


def status_text(command_field: int, status: int) -> str:
    """DCMTK's ``0xnnnn: Text`` rendering of the status of a ``command_field`` response in a dump."""
    text = _look_up(_DUMP_STATUS.get(command_field, ({}, ())), status)
    return f"0x{status:04x}: {text or _category(status)}"


def _category(status: int) -> str:
    """The kind of a status (PS3.7 Annex C): Success, Pending, Cancel, Warning or Failure."""
    if status == 0x0000:
        return "Success"
    if status in (0xFF00, 0xFF01):
        return "Pending"
    if status == 0xFE00:
        return "Cancel"
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "Warning"
    return "Failure"


def dump(command: Command, incoming: bool, dataset_present: bool | None = None) -> str:
    """A DCMTK-style multi-line dump of a message (logged at INFO/DEBUG)."""
    lines = [
        "===================== {} DIMSE MESSAGE ====================".format("INCOMING" if incoming else "OUTGOING"),
        "Message Type                  : " + MESSAGE_NAMES.get(command["CommandField"], "Unknown"),
    ]
    if "MessageID" in command:
        lines.append(f"Message ID                    : {command['MessageID']}")
    if "MessageIDBeingRespondedTo" in command:
        lines.append(f"Message ID Being Responded To : {command['MessageIDBeingRespondedTo']}")
    if "AffectedSOPClassUID" in command:
        lines.append("Affected SOP Class UID        : " + uids.dcmtk_name(command["AffectedSOPClassUID"]))
    if "AffectedSOPInstanceUID" in command:
        lines.append("Affected SOP Instance UID     : " + command["AffectedSOPInstanceUID"])
    for keyword, label in (("NumberOfRemainingSuboperations", "Remaining Suboperations       : "),
                           ("NumberOfCompletedSuboperations", "Completed Suboperations       : "),
                           ("NumberOfFailedSuboperations", "Failed Suboperations          : "),
                           ("NumberOfWarningSuboperations", "Warning Suboperations         : ")):
        if keyword in command:
            lines.append(f"{label}{command[keyword]}")
    present = has_dataset(command) if dataset_present is None else dataset_present
    lines.append("Data Set                      : " + ("present" if present else "none"))
    if "Priority" in command:
        lines.append("Priority                      : " + {0: "medium", 1: "high", 2: "low"}.get(command["Priority"], "unknown"))
    if "MoveDestination" in command:
        lines.append("Move Destination              : " + command["MoveDestination"])
    if "MoveOriginatorApplicationEntityTitle" in command:
        lines.append("Move Originator AE Title      : " + command["MoveOriginatorApplicationEntityTitle"])
    if "MoveOriginatorMessageID" in command:
        lines.append(f"Move Originator ID            : {command['MoveOriginatorMessageID']}")
    if "Status" in command:
        lines.append("DIMSE Status                  : " + status_text(command["CommandField"], command["Status"]))
    lines.append("======================= END DIMSE MESSAGE =======================")
    return "\n".join(lines)


def response(request: Command, status: int, **fields: Any) -> Command:
    """The response command to ``request`` with ``status`` and any further ``fields``."""
    command: Command = {
        "CommandField": request["CommandField"] | 0x8000,
        "MessageIDBeingRespondedTo": request.get("MessageID", 0),
        "Status": status,
    }
    if "AffectedSOPClassUID" in request:
        command["AffectedSOPClassUID"] = request["AffectedSOPClassUID"]
    if "AffectedSOPInstanceUID" in request and request["CommandField"] == C_STORE_RQ:
        command["AffectedSOPInstanceUID"] = request["AffectedSOPInstanceUID"]
    command.update(fields)
    return command
