"""Character sets of query keys and responses (docs/matching.md §4-§5, command-line.md §1 "Charset defaults",
configuration.md §2).

DCMTK's dcmqrscp compares a query key with a record in another character set by converting both to
UTF-8, and converts every C-FIND response to the character set of the request (or to a configured
one). Where its converter converts, we convert with the same results and the same condition texts
(observed with ``dcmconv +C`` and ``dcmqrscp``, Debian's build on GNU iconv), with Python's codecs:

* sources (a record, a request): no Specific Character Set (ASCII), ``ISO_IR 6`` (with a warning: it
  is ASCII), ``ISO_IR 100/101/109/110/144/127/126/138/148/13/166/192/203``, ``GB18030``, ``GBK``; and
  ISO 2022 code extensions (two or more values, each an ``ISO 2022 IR n`` term; the first may be empty);
* destinations (a response): the single-valued terms above, and code extensions: a character outside the
  first set is written in another declared set behind its escape sequence, and the first set is active
  again before every delimiter (PS3.5 §6.1.2.5.3).

Everything else fails as DCMTK fails: a single ``ISO 2022 IR n`` term, unknown terms, a multi-byte set
as the first value. Character sets are handled as the strings of their (0008,0005) values: ``""`` is the
default repertoire, a multi-valued value keeps its backslashes (``"\\ISO 2022 IR 87"``).

Deliberate differences from DCMTK (README differences 19 and 27): ``ISO_IR 203``, ``ISO 2022 IR 87`` and
``159`` (which Debian's iconv cannot open) are converted, and responses are converted to code extensions
(DCMTK converts to no ISO 2022 set); ``--transliterate``/``--discard-illegal`` work (DCMTK on iconv makes
every conversion fail with "Conversion flags not supported by the underlying implementation"); a
response whose conversion fails is sent as it was, never half converted.
"""
from __future__ import annotations

import functools
import logging
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from qrscp.log import DATA, DB, get_logger

#: The default repertoire: no Specific Character Set (DCMTK prints it as "ASCII").
ASCII = ""
#: Unicode in UTF-8.
UTF8 = "ISO_IR 192"

#: Value Representations whose values are affected by the Specific Character Set.
AFFECTED_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})

#: DCMTK's condition text for bytes or characters that have no equivalent (iconv's EILSEQ).
ILLEGAL_CHARACTER = "Cannot convert character encoding: Invalid or incomplete multibyte or wide character"


class CharsetError(Exception):
    """A conversion failed; ``str()`` is DCMTK's condition text for it."""


@dataclass(frozen=True, eq=False)
class _Encoding:
    """An encoding of iconv: the Python codec that reads and writes it, the name DCMTK prints.

    ``iconv_decoding``: how iconv's table differs from the codec's when reading (a ``str.translate``
    table); ``missing``: characters the codec knows but iconv's table has not; ``escape``: for a
    multi-byte set designated to G0 (the JIS sets), the escape sequence that designates it, with which
    its bytes are read by the codec (an ISO 2022 codec) and without which its characters are written.
    """

    codec: str
    name: str
    iconv_decoding: Mapping[int, int] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()
    escape: bytes = b""

    def decode(self, data: bytes) -> str:
        """``data`` as text; raise CharsetError for bytes that are not in the set."""
        try:
            text = (self.escape + data + _ASCII_ESCAPE).decode(self.codec) if self.escape else data.decode(self.codec)
        except UnicodeError:
            raise CharsetError(ILLEGAL_CHARACTER) from None
        if self.missing and not self.missing.isdisjoint(text):
            raise CharsetError(ILLEGAL_CHARACTER)
        return text.translate(self.iconv_decoding) if self.iconv_decoding else text

    def encodable(self, char: str) -> bool:
        """Whether the set has ``char``."""
        return self.code(char) is not None

    def code(self, char: str) -> bytes | None:
        """The bytes of ``char`` in this set (without escape sequences), None if it has none."""
        if char in self.missing:
            return None
        try:
            data = char.encode(self.codec)
        except UnicodeError:
            return None
        if self.escape:
            if not data.startswith(self.escape):
                return None
            data = data[len(self.escape):].removesuffix(_ASCII_ESCAPE)
        return data


#: The escape sequence designating ASCII to G0 (ISO 2022 IR 6).
_ASCII_ESCAPE = b"\x1b(B"
_ASCII = _Encoding("ascii", "ASCII")
_LATIN1 = _Encoding("latin_1", "ISO-8859-1")
_C1_CONTROLS = frozenset(map(chr, range(0x80, 0xA0)))
# glibc reads JIS X 0201 Roman: 0x5C is the yen sign, 0x7E the overline (Python: backslash, tilde).
_SHIFT_JIS = _Encoding("shift_jis", "Shift_JIS", iconv_decoding={0x5C: 0xA5, 0x7E: 0x203E})
_TIS_620 = _Encoding("tis_620", "ISO-IR-166", missing=_C1_CONTROLS)

#: The single-valued defined terms DCMTK converts from and to (``ISO_IR 6`` is ASCII, with a warning).
_STAND_ALONE: dict[str, _Encoding] = {
    "": _ASCII,
    "ISO_IR 100": _LATIN1,
    "ISO_IR 101": _Encoding("iso8859_2", "ISO-8859-2"),
    "ISO_IR 109": _Encoding("iso8859_3", "ISO-8859-3"),
    "ISO_IR 110": _Encoding("iso8859_4", "ISO-8859-4"),
    "ISO_IR 144": _Encoding("iso8859_5", "ISO-8859-5"),
    "ISO_IR 127": _Encoding("iso8859_6", "ISO-8859-6"),
    "ISO_IR 126": _Encoding("iso8859_7", "ISO-8859-7"),
    "ISO_IR 138": _Encoding("iso8859_8", "ISO-8859-8"),
    "ISO_IR 148": _Encoding("iso8859_9", "ISO-8859-9"),
    "ISO_IR 13": _SHIFT_JIS,
    "ISO_IR 166": _TIS_620,
    "ISO_IR 203": _Encoding("iso8859_15", "ISO-8859-15"),
    UTF8: _Encoding("utf-8", "UTF-8"),
    "GB18030": _Encoding("gb18030", "GB18030"),
    "GBK": _Encoding("gbk", "GBK"),
}

#: The ISO 2022 terms of code extensions: the escape sequences designating each (the first designates
#: what a writer uses), and its encoding.
_ISO_2022: dict[str, tuple[tuple[bytes, ...], _Encoding]] = {
    "ISO 2022 IR 6": ((b"\x1b(B",), _ASCII),
    "ISO 2022 IR 100": ((b"\x1b-A",), _LATIN1),
    "ISO 2022 IR 101": ((b"\x1b-B",), _STAND_ALONE["ISO_IR 101"]),
    "ISO 2022 IR 109": ((b"\x1b-C",), _STAND_ALONE["ISO_IR 109"]),
    "ISO 2022 IR 110": ((b"\x1b-D",), _STAND_ALONE["ISO_IR 110"]),
    "ISO 2022 IR 144": ((b"\x1b-L",), _STAND_ALONE["ISO_IR 144"]),
    "ISO 2022 IR 127": ((b"\x1b-G",), _STAND_ALONE["ISO_IR 127"]),
    "ISO 2022 IR 126": ((b"\x1b-F",), _STAND_ALONE["ISO_IR 126"]),
    "ISO 2022 IR 138": ((b"\x1b-H",), _STAND_ALONE["ISO_IR 138"]),
    "ISO 2022 IR 148": ((b"\x1b-M",), _STAND_ALONE["ISO_IR 148"]),
    "ISO 2022 IR 13": ((b"\x1b)I", b"\x1b(J"), _SHIFT_JIS),
    "ISO 2022 IR 166": ((b"\x1b-T",), _TIS_620),
    "ISO 2022 IR 87": ((b"\x1b$B",), _Encoding("iso2022_jp", "ISO-2022-JP", escape=b"\x1b$B")),
    "ISO 2022 IR 159": ((b"\x1b$(D",), _Encoding("iso2022_jp_2", "ISO-2022-JP-2", escape=b"\x1b$(D")),
    "ISO 2022 IR 149": ((b"\x1b$)C",), _Encoding("euc_kr", "EUC-KR")),
    "ISO 2022 IR 58": ((b"\x1b$)A",), _Encoding("gb2312", "GB2312")),
}
#: The Python codecs the conversions use. Python imports a codec on its first use: a server that drops its
#: privileges looks them up before (docs/process.md §1).
CODECS = frozenset(encoding.codec for encoding in (*_STAND_ALONE.values(), *(e for _, e in _ISO_2022.values())))
#: Escape sequence -> the ISO 2022 term it designates.
_ESCAPES = {sequence: term for term, (sequences, _) in _ISO_2022.items() for sequence in sequences}
#: Multi-byte sets that cannot be the first value (the one in effect at the start of a value).
_NOT_FIRST = frozenset({"ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58"})

_ESC = 0x1B
#: Bytes that switch back to the first value's character set: always CR, LF, TAB, FF, and
#: per VR the value and PN component (group) delimiters.
_TEXT_DELIMITERS = b"\r\n\t\f"
_DELIMITERS = {"PN": b"\\^=", "SH": b"\\", "LO": b"\\", "UC": b"\\"}


@functools.lru_cache(maxsize=256)
def parse_charset(value: bytes) -> str:
    """The Specific Character Set string of an element value or index field (``b""`` -> ASCII)."""
    return "\\".join(term.strip(" ") for term in value.decode("latin-1").split("\\"))


def charset_name(charset: str) -> str:
    """How DCMTK names ``charset`` in its log lines: ``ASCII`` for the default repertoire."""
    return charset or "ASCII"


def needs_utf8_conversion(charset: str) -> bool:
    """False for the character sets that are subsets of UTF-8 as they are (ASCII, UTF-8)."""
    return charset not in ("", "ISO_IR 6", UTF8)


def conversion_necessary(source: str, destination: str) -> bool:
    """Whether a response in ``source`` must be converted to ``destination`` (ASCII is UTF-8)."""
    return source != destination and (destination != UTF8 or needs_utf8_conversion(source))


# ---------------------------------------------------------------------------------------------
# Selecting the character sets of a conversion, reading values


def _escape_sequence_text(sequence: bytes) -> str:
    """``ESC 02/05 04/07``: how DCMTK shows an escape sequence (column/row of each byte)."""
    return " ".join(["ESC"] + [f"{byte >> 4:02d}/{byte & 15:02d}" for byte in sequence[1:]])


@dataclass(frozen=True, eq=False)
class Source:
    """A character set selected as the source of conversions: the encoding in effect at the start
    of each value and, with code extensions, the encodings escape sequences may switch to."""

    initial: _Encoding
    designations: Mapping[str, _Encoding] | None = None

    @property
    def code_extensions(self) -> bool:
        """Whether values may switch encodings (reading one may then log warnings)."""
        return self.designations is not None

    def decode(self, value: bytes, vr: str, check: Callable[[str], object] | None = None,
               warn: Callable[[str], object] | None = None) -> str:
        """``value`` of VR ``vr`` as text; raise CharsetError.

        ``check`` is called with each part read in one encoding as soon as it is read: a conversion
        that fails there stops before reading (and warning about) the rest, as DCMTK's does. ``warn``
        receives DCMTK's warnings about the value instead of the log.
        """
        if self.designations is None or _ESC not in value:
            return self.initial.decode(value)
        return self._decode_with_code_extensions(value, self.designations, vr, check or (lambda _: None),
                                                 warn or get_logger(DATA).warning)

    def to_utf8(self, value: bytes, vr: str, warn: Callable[[str], object] | None = None) -> bytes:
        """``value`` of VR ``vr`` in UTF-8; raise CharsetError (``warn``: as for :meth:`decode`)."""
        return self.decode(value, vr, warn=warn).encode("utf-8")

    def _decode_with_code_extensions(self, value: bytes, designations: Mapping[str, _Encoding], vr: str,
                                     check: Callable[[str], object], warn: Callable[[str], object]) -> str:
        """Escape sequences switch the encoding, delimiters switch back to the first value's (but within
        a multi-byte set in G0, whose bytes look like delimiters, only an escape sequence ends it). An
        escape sequence in the first component group of a PN is used, with a warning."""
        delimiters = _TEXT_DELIMITERS + _DELIMITERS.get(vr, b"")
        parts: list[str] = []
        encoding = self.initial
        first_group = vr == "PN"
        start = position = 0        # value[start:position]: read, not yet decoded, in ``encoding``
        while position < len(value):
            byte = value[position]
            if byte != _ESC and (byte not in delimiters or encoding.escape):
                position += 1
                continue
            parts.append(encoding.decode(value[start:position]))
            check(parts[-1])
            start = position
            if byte in delimiters:
                parts.append(chr(byte))
                encoding = self.initial
                if vr == "PN" and byte != 0x5E:        # '\' starts a value, '=' the next component group
                    first_group = byte == 0x5C
                start = position = position + 1
                continue
            if first_group:
                warn("DcmSpecificCharacterSet: Escape sequences shall not be used in the "
                     "first component group of a Person Name (PN), using them anyway")
            end = position + 1
            while end < len(value) and 0x20 <= value[end] <= 0x2F:    # intermediate bytes
                end += 1
            if end == len(value):                      # cut short: read as it is
                break
            sequence = value[position:end + 1]
            term = _ESCAPES.get(sequence)
            if term is None:
                raise CharsetError(f"Cannot convert character set: Illegal escape sequence "
                                   f"'{_escape_sequence_text(sequence)}' found")
            if term not in designations:
                raise CharsetError(f"Cannot convert character set: Escape sequence refers to character set "
                                   f"'{term}' that was not declared in SpecificCharacterSet (0008,0005)")
            encoding = designations[term]
            start = position = end + 1
        parts.append(encoding.decode(value[start:]))
        check(parts[-1])
        return "".join(parts)


#: A log line to write each time a character set is selected: (logging level, message).
_Notice = tuple[int, str]


def _ascii_warning(term: str) -> _Notice:
    return logging.WARNING, (f"DcmSpecificCharacterSet: '{term}' is not a defined term in DICOM, "
                             "will be treated as an empty value (ASCII)")


@functools.lru_cache(maxsize=256)
def _source(charset: str) -> tuple[Source | str, tuple[_Notice, ...]]:
    """``charset`` selected as a source: the result (or the failure's condition text) and the lines
    DCMTK logs while selecting it."""
    terms = charset.split("\\")
    if len(terms) == 1:
        if charset == "ISO_IR 6":
            return Source(_ASCII), (_ascii_warning(charset),)
        if charset in _STAND_ALONE:
            return Source(_STAND_ALONE[charset]), ()
        return (f"Cannot select source character set: SpecificCharacterSet (0008,0005) value "
                f"'{charset}' not supported"), ()
    notices: list[_Notice] = []
    designations: dict[str, _Encoding] = {}
    for number, term in enumerate(terms, start=1):
        if number == 1 and term in _NOT_FIRST:
            return (f"Cannot select source character set: '{term}' is not a allowed as the first value "
                    f"in SpecificCharacterSet (0008,0005)"), tuple(notices)
        if number == 1 and not term:
            term = "ISO 2022 IR 6"
        if term not in _ISO_2022:
            return (f"Cannot select source character set: SpecificCharacterSet (0008,0005) value "
                    f"{number} of {len(terms)} '{term}' not supported"), tuple(notices)
        encoding = _ISO_2022[term][1]
        if term in designations:
            notices.append((logging.WARNING, f"DcmSpecificCharacterSet: '{term}' is defined more than once "
                                             "in SpecificCharacterSet (0008,0005), ignoring the duplicate "
                                             "definition"))
        designations.setdefault(term, encoding)
    designations.setdefault("ISO 2022 IR 6", _ASCII)      # always there for the other sets
    return Source(designations[terms[0] or "ISO 2022 IR 6"], designations), tuple(notices)


def source_of(charset: str) -> Source | CharsetError:
    """``charset`` selected as a source without logging anything (:func:`select_source` logs)."""
    result = _source(charset)[0]
    return CharsetError(result) if isinstance(result, str) else result


def select_source(charset: str) -> Source:
    """Select ``charset`` as the source of conversions, logging as DCMTK does; raise CharsetError.

    DCMTK logs the same lines again each time it selects a character set.
    """
    result, notices = _source(charset)
    log = get_logger(DATA)
    for level, message in notices:
        log.log(level, message)
    if isinstance(result, str):
        raise CharsetError(result)
    return result


class _Destination(Protocol):
    """Where a conversion writes to: one character set, or code extensions."""

    name: str

    def encodable(self, char: str) -> bool: ...

    def encode(self, text: str, vr: str) -> bytes:
        """``text`` of VR ``vr`` in this destination; raise CharsetError for a character it has not."""


@dataclass(frozen=True, eq=False)
class _SingleSet:
    """A destination in one character set."""

    encoding: _Encoding

    @property
    def name(self) -> str:
        return self.encoding.name

    def encodable(self, char: str) -> bool:
        return self.encoding.encodable(char)

    def encode(self, text: str, vr: str) -> bytes:
        try:
            if self.encoding.missing.isdisjoint(text):
                return text.encode(self.encoding.codec)
        except UnicodeError:
            pass
        raise CharsetError(ILLEGAL_CHARACTER)


#: The ISO 2022 terms designated to G0 (the others are designated to G1).
_G0_TERMS = frozenset({"ISO 2022 IR 6", "ISO 2022 IR 87", "ISO 2022 IR 159"})


@dataclass(frozen=True, eq=False)
class _CodeExtensions:
    """A destination in ISO 2022 code extensions (PS3.5 §6.1.2.5): the first term's set is in effect
    at the start of each value and again before every delimiter; another declared set is designated
    by its escape sequence for the characters the first one has not."""

    name: str
    terms: tuple[str, ...]          # in the order of (0008,0005); the first is never empty here

    def _code(self, char: str) -> tuple[str, bytes] | None:
        """The term that writes ``char`` (the first that has it, ASCII for 7-bit characters) and its bytes."""
        for term in ("ISO 2022 IR 6", *self.terms):
            encoding = _ISO_2022[term][1]
            code = encoding.code(char)
            if code is not None and (term in _G0_TERMS or code[0] >= 0x80):
                return term, code
        return None

    def encodable(self, char: str) -> bool:
        return self._code(char) is not None

    def encode(self, text: str, vr: str) -> bytes:
        delimiters = (_TEXT_DELIMITERS + _DELIMITERS.get(vr, b"")).decode("ascii")
        first = self.terms[0]
        initial = {0: "ISO 2022 IR 6", 1: first if first not in _G0_TERMS else None}
        designated = dict(initial)
        out = bytearray()
        for char in text:
            if char in delimiters:
                for register, term in initial.items():     # the first set active again
                    if term is not None and designated[register] != term:
                        out += _ISO_2022[term][0][0]
                designated = dict(initial)
                out += char.encode("ascii")
                continue
            found = self._code(char)
            if found is None:
                raise CharsetError(ILLEGAL_CHARACTER)
            term, code = found
            register = 0 if term in _G0_TERMS else 1
            if designated[register] != term:
                out += _ISO_2022[term][0][0]
                designated[register] = term
            out += code
        if designated[0] != "ISO 2022 IR 6":
            out += _ASCII_ESCAPE
        return bytes(out)


def _select_destination(charset: str) -> _Destination:
    """Select ``charset`` as the destination of a conversion; raise CharsetError."""
    if charset == "ISO_IR 6":
        get_logger(DATA).warning(_ascii_warning(charset)[1])
        return _SingleSet(_ASCII)
    if charset in _STAND_ALONE:
        return _SingleSet(_STAND_ALONE[charset])
    terms = tuple(term or "ISO 2022 IR 6" for term in charset.split("\\"))
    if len(terms) > 1 and terms[0] not in _NOT_FIRST and all(term in _ISO_2022 for term in terms):
        return _CodeExtensions(charset, terms)
    raise CharsetError(f"Cannot select destination character set: SpecificCharacterSet (0008,0005) value "
                       f"'{charset}' not supported")


# ---------------------------------------------------------------------------------------------
# Converting values


def _fit(text: str, encodable: Callable[[str], bool], transliterate: bool, discard: bool) -> str:
    """Replace (``transliterate``) or drop (``discard``) the characters that cannot be encoded.

    Transliteration keeps the base letters of a character's compatibility decomposition
    (``ü`` -> ``u``, ``ﬁ`` -> ``fi``) and writes ``?`` where there is none, as iconv's //TRANSLIT.
    """
    if not (transliterate or discard):
        raise CharsetError(ILLEGAL_CHARACTER)
    fitted = []
    for char in text:
        if encodable(char):
            fitted.append(char)
            continue
        if transliterate:
            base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            if base and all(encodable(c) for c in base):
                fitted.append(base)
            elif not discard:
                fitted.append("?")
    return "".join(fitted)


def _encode(text: str, vr: str, destination: _Destination, transliterate: bool, discard: bool) -> bytes:
    """``text`` of VR ``vr`` in ``destination``; raise CharsetError."""
    try:
        return destination.encode(text, vr)
    except CharsetError:
        return destination.encode(_fit(text, destination.encodable, transliterate, discard), vr)


def to_utf8(value: bytes, charset: str, vr: str) -> bytes:
    """``value`` (VR ``vr``) in ``charset`` converted to UTF-8; raise CharsetError."""
    return select_source(charset).to_utf8(value, vr)


def convert_values(values: Mapping[int, tuple[str, bytes]], source: str, destination: str,
                   transliterate: bool = False, discard: bool = False) -> dict[int, bytes]:
    """Convert all ``values`` (tag -> (VR, bytes)) from ``source`` to ``destination``, or none.

    Values of VRs not affected by the character set are returned as they are. Raises CharsetError
    (with DCMTK's condition text) if a character set cannot be selected or a value cannot be converted.
    """
    destination_encoding = _select_destination(destination)
    source_selected = select_source(source)

    def convert(value: bytes, vr: str) -> bytes:
        return _encode(source_selected.decode(value, vr, lambda part: _encode(part, vr, destination_encoding,
                                                                              transliterate, discard)),
                       vr, destination_encoding, transliterate, discard)

    try:
        return {tag: convert(value, vr) if vr in AFFECTED_VRS and value else value
                for tag, (vr, value) in values.items()}
    except CharsetError:
        get_logger(DATA).warning(
            f"DcmItem: An error occurred during the conversion to {destination_encoding.name} encoding, "
            f"the value of SpecificCharacterSet (0008,0005) is not updated")
        raise


# ---------------------------------------------------------------------------------------------
# Responses


@dataclass(frozen=True)
class CharsetPolicy:
    """What the response character set options mean (``+Cr/-Cr``, ``+A7/+U8/+L1/+C``, ``-Ct/-Cd``).

    A response is converted to the request's character set, or with ``override`` to ``charset``;
    with ``fallback``, when that fails it is converted to the other one of the two instead. The
    configuration's ``abort`` is the absence of both ``transliterate`` and ``discard_illegal``.
    """

    override: bool = False
    fallback: bool = True
    charset: str = ASCII
    transliterate: bool = False
    discard_illegal: bool = False

    def targets(self, request_charset: str) -> tuple[str, str | None]:
        """The destination character set of a response to a request in ``request_charset``, and
        the fall-back one (None: no fall-back)."""
        first, second = (self.charset, request_charset) if self.override else (request_charset, self.charset)
        return first, (second if self.fallback and self.charset != request_charset else None)


def charset_policy(config_line: list[str] | None, use_request_charset: bool | None, convert_to: str | None,
                   transliterate: bool, discard_illegal: bool) -> CharsetPolicy:
    """The policy from the configuration's ``SpecificCharacterSet`` values and the command line.

    ``config_line``: the values of the configuration line, None without one (then: request's
    character set, fall back to ASCII). A line replaces these defaults completely; its values are
    ``override``, ``fallback``, ``abort``, ``discard``, ``transliterate`` or a character set (the
    last one wins). The command line then modifies the result: ``use_request_charset`` True for
    ``+Cr``, False for ``-Cr``, None if neither; ``convert_to`` the character set of
    ``+A7``/``+U8``/``+L1``/``+C`` (``""``, ``"ISO_IR 192"``, ``"ISO_IR 100"``, the term) or None;
    ``-Ct``/``-Cd`` add ``transliterate``/``discard_illegal``.
    """
    policy = CharsetPolicy()
    if config_line is not None:
        override = fallback = translit = discard = False
        charset = ASCII
        for value in config_line:
            if value == "override":
                override = True
            elif value == "fallback":
                fallback = True
            elif value == "abort":
                translit = discard = False
            elif value == "discard":
                discard = True
            elif value == "transliterate":
                translit = True
            else:
                charset = value
        policy = CharsetPolicy(override, fallback, charset, translit, discard)
    return CharsetPolicy(
        override=policy.override if use_request_charset is None else not use_request_charset,
        fallback=policy.fallback,
        charset=policy.charset if convert_to is None else convert_to,
        transliterate=policy.transliterate or transliterate,
        discard_illegal=policy.discard_illegal or discard_illegal,
    )


def convert_response(values: Mapping[int, tuple[str, bytes]], charset: str, request_charset: str,
                     policy: CharsetPolicy) -> tuple[dict[int, bytes], str]:
    """Convert a C-FIND response as ``policy`` says, logging DCMTK's INFO/WARN lines.

    ``values``: the response's elements (tag -> (VR, bytes)) in ``charset`` (the record's Specific
    Character Set). Returns the values to send and their character set (``""``: send no (0008,0005)
    element). When the conversions fail, the values are returned unchanged, in ``charset``.
    """
    destination, fallback = policy.targets(request_charset)
    if not conversion_necessary(charset, destination):
        return {tag: value for tag, (_, value) in values.items()}, charset
    log = get_logger(DB)
    target = destination
    converted = _try_convert(values, charset, target, policy)
    if converted is None and fallback is not None:
        if conversion_necessary(charset, fallback):
            log.info(f'Trying to convert response from character set "{charset_name(charset)}" '
                     f'to fall-back character set "{charset_name(fallback)}" instead')
            target = fallback
            converted = _try_convert(values, charset, target, policy)
        else:
            log.info(f'Conversion to fall-back character set "{charset_name(fallback)}" is not necessary, '
                     f"since the original character set is compatible")
    if converted is None:
        return {tag: value for tag, (_, value) in values.items()}, charset
    return converted, ("" if target == "ISO_IR 6" else target)


def _try_convert(values: Mapping[int, tuple[str, bytes]], charset: str, target: str,
                 policy: CharsetPolicy) -> dict[int, bytes] | None:
    """One conversion attempt of a response, logged as DCMTK does; None if it failed."""
    log = get_logger(DB)
    try:
        converted = convert_values(values, charset, target, policy.transliterate, policy.discard_illegal)
    except CharsetError as error:
        log.warning(f'Converting response from character set "{charset_name(charset)}" to character set '
                    f'"{charset_name(target)}" failed, (error message: {error})')
        return None
    log.info(f'Successfully converted response from character set "{charset_name(charset)}" '
             f'to character set "{charset_name(target)}"')
    return converted
