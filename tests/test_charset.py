"""Character sets: the response policy of the options, UTF-8 matching forms, response conversion.

The expected log lines and error texts are those DCMTK's dcmqrscp 3.6.7 (Debian) writes.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from qrscp.charset import (
    ILLEGAL_CHARACTER,
    CharsetError,
    CharsetPolicy,
    charset_name,
    charset_policy,
    conversion_necessary,
    convert_response,
    convert_values,
    needs_utf8_conversion,
    parse_charset,
    to_utf8,
)

PN, LO, CS = 0x00100010, 0x00081030, 0x00080060


class LogLines(logging.Handler):
    """The ``X: message`` lines logged under DCMTK's logger names."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname[0]}: {record.getMessage()}")


@pytest.fixture
def dcmtk_log() -> Iterator[list[str]]:
    """The log lines written to the ``dcmtk`` logger tree during the test."""
    logger = logging.getLogger("dcmtk")
    handler = LogLines()
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


# --- the options ------------------------------------------------------------------------------

def test_defaults_without_configuration_line():
    """Request's character set, fall back to ASCII (ref §10 "Charset defaults")."""
    assert charset_policy(None, None, None, False, False) == CharsetPolicy(
        override=False, fallback=True, charset="", transliterate=False, discard_illegal=False)


def test_configuration_line_replaces_the_defaults():
    """`SpecificCharacterSet = "ISO_IR 192", override`: always UTF-8, no fall-back."""
    policy = charset_policy(["ISO_IR 192", "override"], None, None, False, False)
    assert policy == CharsetPolicy(override=True, fallback=False, charset="ISO_IR 192")
    assert policy.targets("") == ("ISO_IR 192", None)
    assert policy.targets("ISO_IR 100") == ("ISO_IR 192", None)


def test_command_line_modifies_the_configuration_line():
    """Observed: with that line, +Cr answers in the request's character set, +A7 in ASCII."""
    line = ["ISO_IR 192", "override"]
    use_request = charset_policy(line, True, None, False, False)
    assert use_request.targets("ISO_IR 100") == ("ISO_IR 100", None)
    ascii_ = charset_policy(line, None, "", False, False)
    assert ascii_.targets("ISO_IR 192") == ("", None)


@pytest.mark.parametrize("line, expected", [
    (["fallback"], CharsetPolicy()),
    (["ISO_IR 100"], CharsetPolicy(fallback=False, charset="ISO_IR 100")),
    (["ISO_IR 100", "ISO_IR 192"], CharsetPolicy(fallback=False, charset="ISO_IR 192")),
    (["transliterate", "discard"], CharsetPolicy(fallback=False, transliterate=True, discard_illegal=True)),
    (["transliterate", "abort"], CharsetPolicy(fallback=False)),
])
def test_configuration_values(line, expected):
    assert charset_policy(line, None, None, False, False) == expected


def test_command_line_options():
    """-Cr +L1: Latin-1, falling back to the request's character set; -Ct/-Cd add flags."""
    policy = charset_policy(None, False, "ISO_IR 100", True, True)
    assert policy == CharsetPolicy(override=True, fallback=True, charset="ISO_IR 100",
                                   transliterate=True, discard_illegal=True)
    assert policy.targets("ISO_IR 192") == ("ISO_IR 100", "ISO_IR 192")
    assert policy.targets("ISO_IR 100") == ("ISO_IR 100", None)
    utf8 = charset_policy(None, None, "ISO_IR 192", False, False)      # +U8
    assert utf8.targets("") == ("", "ISO_IR 192")
    assert utf8.targets("ISO_IR 192") == ("ISO_IR 192", None)


# --- when to convert --------------------------------------------------------------------------

@pytest.mark.parametrize("charset, needed", [
    ("", False), ("ISO_IR 6", False), ("ISO_IR 192", False), ("ISO_IR 100", True), ("\\ISO 2022 IR 87", True),
])
def test_utf8_compatible_character_sets(charset, needed):
    assert needs_utf8_conversion(charset) is needed


@pytest.mark.parametrize("source, destination, needed", [
    ("ISO_IR 100", "ISO_IR 100", False),
    ("", "ISO_IR 192", False),           # ASCII is UTF-8
    ("ISO_IR 100", "ISO_IR 192", True),
    ("", "ISO_IR 100", True),            # observed: 'from character set "ASCII" to ... "ISO_IR 100"'
    ("ISO_IR 192", "", True),
])
def test_response_conversion_necessary(source, destination, needed):
    assert conversion_necessary(source, destination) is needed


def test_charset_strings():
    assert parse_charset(b"") == ""
    assert parse_charset(b"ISO_IR 100") == "ISO_IR 100"
    assert parse_charset(b"\\ISO 2022 IR 87") == "\\ISO 2022 IR 87"
    assert parse_charset(b" ISO 2022 IR 6 \\ISO 2022 IR 100") == "ISO 2022 IR 6\\ISO 2022 IR 100"
    assert charset_name("") == "ASCII"
    assert charset_name("ISO_IR 100") == "ISO_IR 100"


# --- conversion to UTF-8 (matching) -----------------------------------------------------------

@pytest.mark.parametrize("charset, text, codec", [
    ("ISO_IR 100", "Müller^Jörg", "latin-1"),
    ("ISO_IR 101", "Dvořák", "iso8859_2"),
    ("ISO_IR 144", "Иванов^Иван", "iso8859_5"),
    ("ISO_IR 126", "Διονυσιος", "iso8859_7"),
    ("ISO_IR 203", "€uro", "iso8859_15"),
    ("ISO_IR 13", "ｱｲｳ", "shift_jis"),
    ("ISO_IR 166", "สมชาย", "tis_620"),
    ("GB18030", "王^小东", "gb18030"),
    ("ISO_IR 192", "山田^太郎", "utf-8"),
    ("", "Doe^John", "ascii"),
])
def test_to_utf8_single_byte_and_stand_alone_sets(charset, text, codec):
    assert to_utf8(text.encode(codec), charset, "PN") == text.encode("utf-8")


def test_to_utf8_with_iso_2022_code_extensions():
    """PS3.5 H.3.1: Japanese person name with JIS X 0208 kanji and escape sequences."""
    value = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"
    assert to_utf8(value, "\\ISO 2022 IR 87", "PN").decode() == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    latin = b"\x1b-AM\xfcller"
    assert to_utf8(latin, "ISO 2022 IR 6\\ISO 2022 IR 100", "LO") == "Müller".encode()


@pytest.mark.parametrize("value, charset, message", [
    (b"Bad\xff", "ISO_IR 192", ILLEGAL_CHARACTER),
    (b"M\xfcller", "", ILLEGAL_CHARACTER),          # the default repertoire is 7-bit
    (b"Foo", "ISO_IR 999",
     "Cannot select source character set: SpecificCharacterSet (0008,0005) value 'ISO_IR 999' not supported"),
])
def test_to_utf8_failures(value, charset, message):
    with pytest.raises(CharsetError) as failure:
        to_utf8(value, charset, "PN")
    assert str(failure.value) == message


# --- converting values ------------------------------------------------------------------------

def test_convert_values_leaves_unaffected_vrs_alone():
    values = {PN: ("PN", "Müller".encode("latin-1")), CS: ("CS", b"CT"), LO: ("LO", b"")}
    assert convert_values(values, "ISO_IR 100", "ISO_IR 192") == {PN: "Müller".encode(), CS: b"CT", LO: b""}


def test_convert_values_is_all_or_nothing(dcmtk_log):
    """DCMTK converts element by element and leaves earlier ones converted; we convert none."""
    values = {LO: ("LO", "Müller".encode()), PN: ("PN", "山田^太郎".encode())}
    with pytest.raises(CharsetError, match="Invalid or incomplete multibyte"):
        convert_values(values, "ISO_IR 192", "ISO_IR 100")
    assert dcmtk_log == ["W: DcmItem: An error occurred during the conversion to ISO-8859-1 encoding, "
                         "the value of SpecificCharacterSet (0008,0005) is not updated"]


def test_convert_values_unknown_destination(dcmtk_log):
    with pytest.raises(CharsetError) as failure:
        convert_values({PN: ("PN", b"Doe")}, "ISO_IR 100", "\\ISO 2022 IR 999")
    assert str(failure.value) == ("Cannot select destination character set: SpecificCharacterSet (0008,0005) "
                                  "value '\\ISO 2022 IR 999' not supported")
    assert dcmtk_log == []     # selecting fails before any conversion


def test_convert_to_iso_2022_destination():
    converted = convert_values({PN: ("PN", "Yamada^Tarou=山田^太郎".encode())}, "ISO_IR 192", "\\ISO 2022 IR 87")
    assert converted[PN] == b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"
    # Latin letters that neither ASCII nor JIS X 0208 has cannot be encoded
    with pytest.raises(CharsetError):
        convert_values({PN: ("PN", "Müller".encode())}, "ISO_IR 192", "\\ISO 2022 IR 87")


def test_transliterate_and_discard():
    values = {PN: ("PN", "Müller^Zoë山".encode())}
    assert convert_values(values, "ISO_IR 192", "", transliterate=True) == {PN: b"Muller^Zoe?"}
    assert convert_values(values, "ISO_IR 192", "", discard=True) == {PN: b"Mller^Zo"}
    assert convert_values(values, "ISO_IR 192", "", transliterate=True, discard=True) == {PN: b"Muller^Zoe"}
    assert convert_values(values, "ISO_IR 192", "ISO_IR 100", discard=True) == {PN: "Müller^Zoë".encode("latin-1")}


def test_iso_ir_6_is_ascii(dcmtk_log):
    assert convert_values({PN: ("PN", b"Doe")}, "ISO_IR 100", "ISO_IR 6") == {PN: b"Doe"}
    assert dcmtk_log == ["W: DcmSpecificCharacterSet: 'ISO_IR 6' is not a defined term in DICOM, "
                         "will be treated as an empty value (ASCII)"]


# --- converting responses ---------------------------------------------------------------------

def test_response_converted_to_the_request_character_set(dcmtk_log):
    values = {PN: ("PN", "Müller".encode("latin-1"))}
    assert convert_response(values, "ISO_IR 100", "ISO_IR 192", CharsetPolicy()) == ({PN: "Müller".encode()},
                                                                                      "ISO_IR 192")
    assert dcmtk_log == ['I: Successfully converted response from character set "ISO_IR 100" '
                         'to character set "ISO_IR 192"']


def test_response_converted_to_ascii_drops_the_character_set(dcmtk_log):
    values = {PN: ("PN", b"Smith^John")}
    assert convert_response(values, "ISO_IR 100", "", CharsetPolicy()) == ({PN: b"Smith^John"}, "")
    assert dcmtk_log == ['I: Successfully converted response from character set "ISO_IR 100" to character set "ASCII"']


def test_ascii_record_converted_to_latin1_request(dcmtk_log):
    values = {PN: ("PN", b"Muller^Ascii")}
    assert convert_response(values, "", "ISO_IR 100", CharsetPolicy()) == ({PN: b"Muller^Ascii"}, "ISO_IR 100")
    assert dcmtk_log == ['I: Successfully converted response from character set "ASCII" to character set "ISO_IR 100"']


def test_response_not_converted(dcmtk_log):
    """Same character set, or UTF-8 requested for an ASCII record: nothing to do, nothing logged."""
    values = {PN: ("PN", b"Doe")}
    assert convert_response(values, "ISO_IR 100", "ISO_IR 100", CharsetPolicy()) == ({PN: b"Doe"}, "ISO_IR 100")
    assert convert_response(values, "", "ISO_IR 192", CharsetPolicy()) == ({PN: b"Doe"}, "")
    assert dcmtk_log == []


def test_failed_response_conversion_is_sent_unconverted(dcmtk_log):
    """Observed with an ASCII request and a Latin-1 record (no fall-back: ASCII is the request's)."""
    values = {PN: ("PN", "Müller^Jörg".encode("latin-1"))}
    assert convert_response(values, "ISO_IR 100", "", CharsetPolicy()) == (
        {PN: "Müller^Jörg".encode("latin-1")}, "ISO_IR 100")
    assert dcmtk_log == [
        "W: DcmItem: An error occurred during the conversion to ASCII encoding, "
        "the value of SpecificCharacterSet (0008,0005) is not updated",
        'W: Converting response from character set "ISO_IR 100" to character set "ASCII" failed, '
        "(error message: Cannot convert character encoding: Invalid or incomplete multibyte or wide character)",
    ]


def test_fallback_conversion(dcmtk_log):
    """+U8: an ASCII request gets a Latin-1 record in UTF-8 when ASCII fails (observed)."""
    values = {PN: ("PN", "Müller^Jörg".encode("latin-1"))}
    policy = charset_policy(None, None, "ISO_IR 192", False, False)
    assert convert_response(values, "ISO_IR 100", "", policy) == ({PN: "Müller^Jörg".encode()}, "ISO_IR 192")
    assert dcmtk_log[1:] == [
        'W: Converting response from character set "ISO_IR 100" to character set "ASCII" failed, '
        "(error message: Cannot convert character encoding: Invalid or incomplete multibyte or wide character)",
        'I: Trying to convert response from character set "ISO_IR 100" to fall-back character set '
        '"ISO_IR 192" instead',
        'I: Successfully converted response from character set "ISO_IR 100" to character set "ISO_IR 192"',
    ]


def test_fallback_not_necessary(dcmtk_log):
    """+U8 and a UTF-8 record that ASCII cannot hold: sent as it is (observed)."""
    values = {PN: ("PN", "山田".encode())}
    policy = charset_policy(None, None, "ISO_IR 192", False, False)
    assert convert_response(values, "ISO_IR 192", "", policy) == ({PN: "山田".encode()}, "ISO_IR 192")
    assert dcmtk_log[-1] == ('I: Conversion to fall-back character set "ISO_IR 192" is not necessary, '
                             "since the original character set is compatible")


def test_fallback_fails_too(dcmtk_log):
    values = {PN: ("PN", b"Foo")}
    assert convert_response(values, "ISO_IR 999", "ISO_IR 192", CharsetPolicy()) == ({PN: b"Foo"}, "ISO_IR 999")
    assert dcmtk_log == [
        'W: Converting response from character set "ISO_IR 999" to character set "ISO_IR 192" failed, '
        "(error message: Cannot select source character set: SpecificCharacterSet (0008,0005) "
        "value 'ISO_IR 999' not supported)",
        'I: Trying to convert response from character set "ISO_IR 999" to fall-back character set "ASCII" instead',
        'W: Converting response from character set "ISO_IR 999" to character set "ASCII" failed, '
        "(error message: Cannot select source character set: SpecificCharacterSet (0008,0005) "
        "value 'ISO_IR 999' not supported)",
    ]
