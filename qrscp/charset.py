"""Character sets of query keys and responses (ref §3.4, §3.5, §10 "Charset defaults", §5.2).

DCMTK's dcmqrscp (built with iconv) compares a query key with a record in another character set by
converting both to UTF-8, and converts every C-FIND response to the character set of the request (or
to a configured one). We do the same with Python's codecs, through pydicom's table of DICOM defined
terms and its ISO 2022 code-extension machinery. Character sets are handled as the strings of their
(0008,0005) Specific Character Set values: ``""`` is the default repertoire (ASCII), a multi-valued
value keeps its backslashes (``"\\ISO 2022 IR 87"``).

Deliberate differences from the Debian DCMTK 3.6.7 build (which fails every conversion for them):
ISO_IR 203, single-valued ISO 2022 terms and ISO 2022 code extensions are converted (source and
destination); ``--transliterate``/``--discard-illegal`` work instead of making every conversion fail
with "Conversion flags not supported by the underlying implementation"; a response whose conversion
fails is sent as it was, never half converted.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import pydicom.config
from pydicom.charset import decode_bytes, encode_string, python_encoding

from qrscp.log import DATA, DB, get_logger

#: The default repertoire: no Specific Character Set (DCMTK prints it as "ASCII").
ASCII = ""
#: Unicode in UTF-8.
UTF8 = "ISO_IR 192"

#: Value Representations whose values are affected by the Specific Character Set.
AFFECTED_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})

# Defined term -> Python codec: pydicom's table, except that DICOM's default repertoire is 7-bit
# ASCII (as for iconv; pydicom reads it leniently as Latin-1) and ISO_IR 203 is missing there.
_CODECS = {
    **python_encoding,
    "": "ascii",
    "ISO_IR 6": "ascii",
    "ISO 2022 IR 6": "ascii",
    "ISO_IR 203": "iso8859_15",
    "ISO 2022 IR 203": "iso8859_15",
}

# Encoding names as DCMTK's iconv-based converter prints them in its messages.
_ENCODING_NAMES = {
    "": "ASCII", "ISO_IR 6": "ASCII", "ISO_IR 100": "ISO-8859-1", "ISO_IR 101": "ISO-8859-2",
    "ISO_IR 109": "ISO-8859-3", "ISO_IR 110": "ISO-8859-4", "ISO_IR 144": "ISO-8859-5",
    "ISO_IR 127": "ISO-8859-6", "ISO_IR 126": "ISO-8859-7", "ISO_IR 138": "ISO-8859-8",
    "ISO_IR 148": "ISO-8859-9", "ISO_IR 203": "ISO-8859-15", "ISO_IR 13": "Shift_JIS",
    "ISO_IR 166": "ISO-IR-166", "ISO_IR 192": "UTF-8", "GB18030": "GB18030", "GBK": "GBK",
}

_ESC = 0x1B
_PN_GROUP_DELIMITERS = {0x5E}                  # '^' resets code extensions inside a PN group
_TEXT_DELIMITERS = {0x0D, 0x0A, 0x09, 0x0C}    # CR, LF, TAB, FF
_MULTI_VALUED_VRS = frozenset({"SH", "LO", "UC", "PN"})

#: DCMTK's condition text for bytes or characters that have no equivalent (iconv's EILSEQ).
ILLEGAL_CHARACTER = "Cannot convert character encoding: Invalid or incomplete multibyte or wide character"


class CharsetError(Exception):
    """A conversion failed; ``str()`` is DCMTK's condition text for it."""


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


def _codecs(charset: str, role: str) -> list[str]:
    """The Python codec of each value of ``charset``; ``role`` is "source" or "destination"."""
    terms = charset.split("\\")
    if "ISO_IR 6" in terms:
        get_logger(DATA).warning("DcmSpecificCharacterSet: 'ISO_IR 6' is not a defined term in DICOM, "
                                 "will be treated as an empty value (ASCII)")
    try:
        return [_CODECS[term] for term in terms]
    except KeyError:
        raise CharsetError(f"Cannot select {role} character set: SpecificCharacterSet (0008,0005) "
                           f"value '{charset}' not supported") from None


@contextmanager
def _strict_pydicom() -> Iterator[None]:
    """Make pydicom raise on undecodable or unencodable values instead of replacing characters."""
    settings = pydicom.config.settings
    saved = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.RAISE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def _split(value: bytes, vr: str) -> list[bytes]:
    return value.split(b"\\") if vr in _MULTI_VALUED_VRS else [value]


def _decode(value: bytes, codecs: list[str], vr: str) -> str:
    """Decode ``value`` of VR ``vr``; raise CharsetError for bytes that are not in the set."""
    try:
        if _ESC not in value or (len(codecs) == 1 and codecs[0].startswith("iso2022")):
            return value.decode(codecs[0])
        with _strict_pydicom():
            if vr != "PN":
                return "\\".join(decode_bytes(part, codecs, _TEXT_DELIMITERS) for part in _split(value, vr))
            return "\\".join(
                "=".join(decode_bytes(group, codecs, _PN_GROUP_DELIMITERS) for group in part.split(b"="))
                for part in _split(value, vr))
    except (UnicodeError, ValueError, LookupError):
        raise CharsetError(ILLEGAL_CHARACTER) from None


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


def _encode(text: str, charset: str, codecs: list[str], vr: str, transliterate: bool, discard: bool) -> bytes:
    """Encode ``text`` in ``charset`` (already resolved to ``codecs``); raise CharsetError."""
    def encodable(char: str) -> bool:
        for codec in codecs:
            try:
                char.encode(codec)
                return True
            except UnicodeError:
                pass
        return False

    if len(codecs) == 1:
        try:
            return text.encode(codecs[0])
        except UnicodeError:
            return _fit(text, encodable, transliterate, discard).encode(codecs[0])
    if not all(map(encodable, text)):
        text = _fit(text, encodable, transliterate, discard)
    # Code extensions: each value (and PN component group) starts in the default repertoire.
    encodings = [python_encoding.get(term, codec) for term, codec in zip(charset.split("\\"), codecs)]
    values = text.split("\\") if vr in _MULTI_VALUED_VRS else [text]
    try:
        with _strict_pydicom():
            encoded = b"\\".join(
                b"=".join(encode_string(group, encodings) for group in (value.split("=") if vr == "PN" else [value]))
                for value in values)
    except (UnicodeError, ValueError):
        raise CharsetError(ILLEGAL_CHARACTER) from None
    # pydicom encodes the default repertoire as Latin-1: reject what does not read back as it was.
    if _decode(encoded, codecs, vr) != text:
        raise CharsetError(ILLEGAL_CHARACTER)
    return encoded


def to_utf8(value: bytes, charset: str, vr: str) -> bytes:
    """``value`` (VR ``vr``) in ``charset`` converted to UTF-8; raise CharsetError."""
    return _decode(value, _codecs(charset, "source"), vr).encode("utf-8")


def convert_values(values: Mapping[int, tuple[str, bytes]], source: str, destination: str,
                   transliterate: bool = False, discard: bool = False) -> dict[int, bytes]:
    """Convert all ``values`` (tag -> (VR, bytes)) from ``source`` to ``destination``, or none.

    Values of VRs not affected by the character set are returned as they are. Raises CharsetError
    (with DCMTK's condition text) if a character set is unknown or a value cannot be converted.
    """
    source_codecs = _codecs(source, "source")
    destination_codecs = _codecs(destination, "destination")
    try:
        return {tag: _encode(_decode(value, source_codecs, vr), destination, destination_codecs, vr,
                             transliterate, discard)
                if vr in AFFECTED_VRS and value else value
                for tag, (vr, value) in values.items()}
    except CharsetError:
        get_logger(DATA).warning(
            f"DcmItem: An error occurred during the conversion to "
            f"{_ENCODING_NAMES.get(destination, destination)} encoding, the value of "
            f"SpecificCharacterSet (0008,0005) is not updated")
        raise


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
    log = get_logger(DB)
    destination, fallback = policy.targets(request_charset)
    if not conversion_necessary(charset, destination):
        return {tag: value for tag, (_, value) in values.items()}, charset
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
