"""DCMTK's text dump of a data set (``DcmDataset::print``), as dcmqrscp logs identifiers.

One line per element: ``(gggg,eeee) VR value``, the value padded to 40 characters, then ``#`` with the
encoded length (``u/l`` if undefined), the value multiplicity and the element's name. Strings show in
brackets without their padding, known UIDs by DCMTK's name (``=CTImageStorage``), numbers bare, empty
values as ``(no value available)``; sequence items are indented by two spaces per level and closed by
the delimitation items DCMTK shows. For example::

    # Dicom-Data-Set
    # Used TransferSyntax: Little Endian Explicit
    (0008,0052) CS [STUDY]                                  #   6, 1 QueryRetrieveLevel
    (0020,000d) UI (no value available)                     #   0, 0 StudyInstanceUID
"""
from __future__ import annotations

import struct


from qrscp.dicom import dictionary, uids
from qrscp.dicom.elements import UNDEFINED_LENGTH, Element
from qrscp.dicom.identifiers import decode_identifier

#: DCMTK's names of the transfer syntaxes an identifier can come in.
_SYNTAX_NAMES = {
    uids.IMPLICIT_VR_LE: "Little Endian Implicit",
    uids.EXPLICIT_VR_LE: "Little Endian Explicit",
    uids.EXPLICIT_VR_BE: "Big Endian Explicit",
    uids.DEFLATED_EXPLICIT_VR_LE: "Deflated Explicit VR Little Endian",
}
_STRING_VRS = frozenset(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                         "UR", "UT"))
_SINGLE_VALUED_VRS = frozenset(("LT", "ST", "UT", "UR"))
#: VR -> struct format of one value
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_VALUE_WIDTH = 40


def dump(data: bytes, transfer_syntax: str) -> str:
    """The dump of the identifier ``data`` encoded in ``transfer_syntax``, framed by empty lines as DCMTK
    logs it; the parser's complaint if it does not parse."""
    try:
        elements = decode_identifier(data, transfer_syntax).elements
    except ValueError as error:
        return f"\n# Dicom-Data-Set (does not parse: {error})\n"
    lines = ["", "# Dicom-Data-Set",
             "# Used TransferSyntax: " + _SYNTAX_NAMES.get(transfer_syntax, "Unknown Transfer Syntax")]
    _print_elements(elements, 0, lines, transfer_syntax == uids.IMPLICIT_VR_LE)
    return "\n".join(lines) + "\n"


def _line(level: int, tag: int, vr: str, value: str, length: int, vm: int, name: str) -> str:
    shown_length = "u/l" if length == UNDEFINED_LENGTH else str(length)
    padding = " " * (_VALUE_WIDTH - len(value.encode()))   # DCMTK counts bytes
    return (f"{'  ' * level}({tag >> 16:04x},{tag & 0xFFFF:04x}) {vr} {value}{padding} "
            f"#{shown_length:>4},{vm:>2} {name}")


def _name(tag: int) -> str:
    if tag & 0xFFFF == 0:
        return "GenericGroupLength"
    if tag >> 16 & 1:
        return "PrivateCreator" if 0x0010 <= tag & 0xFFFF <= 0x00FF else "Unknown Tag & Data"
    return dictionary.keyword(tag) or "Unknown Tag & Data"


def _print_elements(elements: list[Element], level: int, lines: list[str], implicit: bool) -> None:
    for element in elements:
        if element.items is not None:
            _print_sequence(element, level, lines, implicit)
        else:
            value, vm = _value(element)
            vr = "??" if implicit and element.vr == "UN" else element.vr   # not in the dictionary
            lines.append(_line(level, element.tag, vr, value, element.length, vm, _name(element.tag)))


def _print_sequence(element: Element, level: int, lines: list[str], implicit: bool) -> None:
    items = element.items or []
    item_lengths = element.item_lengths or [UNDEFINED_LENGTH] * len(items)
    kind = "undefined" if element.length == UNDEFINED_LENGTH else "explicit"
    lines.append(_line(level, element.tag, "SQ", f"(Sequence with {kind} length #={len(items)})", element.length,
                       1, _name(element.tag)))
    for item, length in zip(items, item_lengths):
        kind = "undefined" if length == UNDEFINED_LENGTH else "explicit"
        lines.append(_line(level + 1, 0xFFFEE000, "na", f"(Item with {kind} length #={len(item)})", length, 1,
                           "Item"))
        _print_elements(item, level + 2, lines, implicit)
        closing = "(ItemDelimitationItem)" if length == UNDEFINED_LENGTH else "(ItemDelimitationItem for re-encoding)"
        lines.append(_line(level + 1, 0xFFFEE00D, "na", closing, 0, 0, "ItemDelimitationItem"))
    closing = "(SequenceDelimitationItem)" if element.length == UNDEFINED_LENGTH \
        else "(SequenceDelimitationItem for re-encod.)"
    lines.append(_line(level, 0xFFFEE0DD, "na", closing, 0, 0, "SequenceDelimitationItem"))


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _value(element: Element) -> tuple[str, int]:
    """The value as DCMTK prints it, and its multiplicity."""
    raw, vr = element.value or b"", element.vr
    if vr in _STRING_VRS:
        text = _text(raw.rstrip(b" \0") if vr != "UI" else raw.rstrip(b"\0"))
        if not text:
            return "(no value available)", 0
        vm = 1 if vr in _SINGLE_VALUED_VRS else text.count("\\") + 1
        name = uids.dcmtk_name(text) if vr == "UI" and vm == 1 else text
        return (f"={name}" if name != text else f"[{text}]"), vm
    if not raw:
        return "(no value available)", 0
    if vr in _NUMBER_FORMATS:
        size = struct.calcsize(_NUMBER_FORMATS[vr])
        count = len(raw) // size
        numbers = struct.unpack(f"<{count}{_NUMBER_FORMATS[vr]}", raw[:count * size])
        return "\\".join(f"{n:g}" if isinstance(n, float) else str(n) for n in numbers), count
    if vr == "AT":
        pairs = struct.unpack(f"<{len(raw) // 2}H", raw[:len(raw) // 2 * 2])
        return "\\".join(f"({g:04x},{e:04x})" for g, e in zip(pairs[::2], pairs[1::2])), len(pairs) // 2
    width = 4 if vr == "OW" else 2
    words = struct.unpack(f"<{len(raw) // 2}H", raw[:len(raw) // 2 * 2]) if width == 4 else raw
    return "\\".join(f"{w:0{width}x}" for w in words), 1
