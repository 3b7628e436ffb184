"""Character sets: the response policy of the options, UTF-8 matching forms, response conversion.

The expected log lines and error texts are those DCMTK's dcmqrscp 3.6.7 (Debian) writes.
"""
from __future__ import annotations

import pytest

from qrscp.dicom.charset import (
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
    select_source,
    to_utf8,
)

PN, LO, CS = 0x00100010, 0x00081030, 0x00080060
#: PS3.5 Annex H.3.1 and I.2: a Japanese and a Korean person name in code extensions, as bytes and as text.
JAPANESE = (b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
            "Yamada^Tarou=山田^太郎=やまだ^たろう")
KOREAN = (b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf",
          "Hong^Gildong=洪^吉洞=홍^길동")
FIRST_GROUP_ESCAPE = ("W: DcmSpecificCharacterSet: Escape sequences shall not be used in the first component group "
                      "of a Person Name (PN), using them anyway")


# --- the options --------------------------------------------------------------------------------------------------

def test_defaults_without_configuration_line():
    """Request's character set, fall back to ASCII (docs/command-line.md §1 "Charset defaults")."""
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


# --- when to convert ----------------------------------------------------------------------------------------------

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


# --- conversion to UTF-8 (matching) -------------------------------------------------------------------------------

@pytest.mark.parametrize("charset, text, codec", [
    ("ISO_IR 100", "Müller^Jörg", "latin-1"),
    ("ISO_IR 101", "Dvořák", "iso8859_2"),
    ("ISO_IR 144", "Иванов^Иван", "iso8859_5"),
    ("ISO_IR 126", "Διονυσιος", "iso8859_7"),
    ("ISO_IR 13", "ｱｲｳ", "shift_jis"),
    ("ISO_IR 166", "สมชาย", "tis_620"),
    ("GB18030", "王^小东", "gb18030"),
    ("GBK", "王^小东", "gbk"),
    ("ISO_IR 192", "山田^太郎", "utf-8"),
    ("", "Doe^John", "ascii"),
    (" ISO_IR 100 ", "Jörg", "latin-1"),          # spaces around a term do not count
])
def test_to_utf8_single_byte_and_stand_alone_sets(charset, text, codec):
    assert to_utf8(text.encode(codec), parse_charset(charset.encode()), "PN") == text.encode("utf-8")


def test_iconv_tables_where_python_differs():
    """Observed with DCMTK: glibc reads JIS X 0201 (0x5C yen, 0x7E overline), and TIS-620 has no C1 controls."""
    assert to_utf8(b"a\\b~", "ISO_IR 13", "PN").decode() == "a¥b‾"
    with pytest.raises(CharsetError, match="Invalid or incomplete"):
        to_utf8(b"\x80", "ISO_IR 166", "LO")


def test_iso_ir_6_reads_as_ascii(dcmtk_log):
    assert to_utf8(b"Doe", "ISO_IR 6", "PN") == b"Doe"
    assert dcmtk_log == ["W: DcmSpecificCharacterSet: 'ISO_IR 6' is not a defined term in DICOM, "
                         "will be treated as an empty value (ASCII)"]


@pytest.mark.parametrize("charset, value, vr, text", [
    ("ISO 2022 IR 6\\ISO 2022 IR 100", b"\x1b-AM\xfcller", "LO", "Müller"),
    ("\\ISO 2022 IR 100\\ISO 2022 IR 126", b"\x1b-A\xfc\x1b-F\xe1\x1b(Bb", "LO", "üαb"),
    ("ISO 2022 IR 100\\ISO 2022 IR 126", b"\xfc^\x1b-F\xe1", "PN", "ü^α"),      # starts in the first value's set
    ("ISO 2022 IR 13\\ISO 2022 IR 100", b"\xb1\xb2^abc", "PN", "ｱｲ^abc"),
    ("ISO 2022 IR 6\\ISO 2022 IR 13", b"abc=\x1b)I\xb1\xb2", "PN", "abc=ｱｲ"),
    ("\\ISO 2022 IR 149", b"Kim^Gil=\x1b$)C\xb1\xe8^\x1b$)C\xb1\xe6", "PN", "Kim^Gil=김^길"),
    ("\\ISO 2022 IR 58", b"Zhang=\x1b$)A\xd5\xc5", "PN", "Zhang=张"),
    ("\\ISO 2022 IR 100", b"ab\x1b-", "LO", "ab\x1b-"),        # an escape sequence cut short: as it is
    ("ISO 2022 IR 100\\ISO 2022 IR 100", b"Doe", "PN", "Doe"),
])
def test_to_utf8_with_iso_2022_code_extensions(charset, value, vr, text):
    """The code extensions DCMTK's iconv build reads (observed with dcmconv +C)."""
    assert to_utf8(value, charset, vr).decode() == text


@pytest.mark.parametrize("vr, value, text", [
    ("PN", b"Ab=\x1b-A\xfc^\x1b-A\xfc", "Ab=ü^ü"),
    ("PN", b"Ab=\x1b-A\xfc^\xfc", None),            # '^' switches back to ASCII
    ("LO", b"\x1b-A\xfc^\xfc=\xfc", "ü^ü=ü"),        # not in a LO
    ("LO", b"\x1b-A\xfc\\\xfc", None),              # '\' does
    ("LT", b"\x1b-A\xfc\\\xfc", "ü\\ü"),           # not in a LT
    ("LT", b"\x1b-A\xfc\r\n\xfc", None),            # CR, LF, TAB, FF always do
    ("LO", b"\x1b-A\xfc\t\xfc", None),
])
def test_delimiters_switch_back_to_the_first_character_set(vr, value, text):
    if text is None:
        with pytest.raises(CharsetError, match="Invalid or incomplete"):
            to_utf8(value, "\\ISO 2022 IR 100", vr)
    else:
        assert to_utf8(value, "\\ISO 2022 IR 100", vr).decode() == text


def test_escape_sequences_in_the_first_group_of_a_person_name(dcmtk_log):
    """Used, with a warning each (observed); values after a backslash start a first group again."""
    assert to_utf8(b"A\x1b-A\xfc\\B\x1b-A\xfc=\x1b-A\xfc", "\\ISO 2022 IR 100", "PN").decode() == "Aü\\Bü=ü"
    assert dcmtk_log == [FIRST_GROUP_ESCAPE] * 2


@pytest.mark.parametrize("value, message", [
    (b"\x1b-BAbc", "Cannot convert character set: Escape sequence refers to character set 'ISO 2022 IR 101' "
                   "that was not declared in SpecificCharacterSet (0008,0005)"),
    (b"\x1b$BAbc", "Cannot convert character set: Escape sequence refers to character set 'ISO 2022 IR 87' "
                   "that was not declared in SpecificCharacterSet (0008,0005)"),
    (b"\x1b%GAbc", "Cannot convert character set: Illegal escape sequence 'ESC 02/05 04/07' found"),
    (b"M\xfcller", ILLEGAL_CHARACTER),                # no escape sequence: ASCII
])
def test_escape_sequence_failures(value, message, dcmtk_log):
    with pytest.raises(CharsetError) as failure:
        to_utf8(value, "\\ISO 2022 IR 100", "PN")
    assert str(failure.value) == message
    assert dcmtk_log == ([FIRST_GROUP_ESCAPE] if b"\x1b" in value else [])


@pytest.mark.parametrize("charset, message", [
    ("ISO_IR 999", "Cannot select source character set: SpecificCharacterSet (0008,0005) value 'ISO_IR 999' "
                   "not supported"),
    ("ISO 2022 IR 100", "Cannot select source character set: SpecificCharacterSet (0008,0005) value "
                        "'ISO 2022 IR 100' not supported"),
    ("iso_ir 100", "Cannot select source character set: SpecificCharacterSet (0008,0005) value 'iso_ir 100' "
                   "not supported"),
    ("ISO_IR 100\\ISO_IR 192", "Cannot select source character set: SpecificCharacterSet (0008,0005) value "
                               "1 of 2 'ISO_IR 100' not supported"),
    ("ISO 2022 IR 6\\", "Cannot select source character set: SpecificCharacterSet (0008,0005) value 2 of 2 '' "
                        "not supported"),
    ("ISO 2022 IR 87\\ISO_IR 100", "Cannot select source character set: 'ISO 2022 IR 87' is not a allowed as "
                                   "the first value in SpecificCharacterSet (0008,0005)"),
    ("ISO 2022 IR 149\\ISO 2022 IR 100", "Cannot select source character set: 'ISO 2022 IR 149' is not a "
                                         "allowed as the first value in SpecificCharacterSet (0008,0005)"),
])
def test_character_sets_dcmtk_cannot_read(charset, message, dcmtk_log):
    """Observed with the Debian build: single ISO 2022 terms and unknown terms are not supported."""
    with pytest.raises(CharsetError) as failure:
        to_utf8(b"Doe", charset, "PN")
    assert str(failure.value) == message
    assert dcmtk_log == []


@pytest.mark.parametrize("charset", ["\\ISO 2022 IR 87", "ISO 2022 IR 13\\ISO 2022 IR 87",
                                     "ISO 2022 IR 6\\ISO 2022 IR 87\\ISO 2022 IR 100"])
def test_japanese_kanji_sets_are_read(charset, dcmtk_log):
    """Deliberate difference (README 19): Debian's iconv cannot open ISO 2022 IR 87, Python's codecs can.
    A delimiter byte within a JIS X 0208 run is part of a character (``$^``)."""
    assert to_utf8(JAPANESE[0], charset, "PN") == JAPANESE[1].encode()
    assert to_utf8(b"\x1b$(D+!", "\\ISO 2022 IR 159", "LO") == "á".encode()     # JIS X 0212
    assert dcmtk_log == []


def test_iso_ir_203_is_read_and_written():
    """Deliberate difference (README 19): Latin-9, which Debian's iconv build of DCMTK does not know."""
    assert to_utf8("Müller^€".encode("iso8859_15"), "ISO_IR 203", "PN") == "Müller^€".encode()
    assert convert_values({PN: ("PN", "Müller^€".encode())}, "ISO_IR 192", "ISO_IR 203") == {
        PN: "Müller^€".encode("iso8859_15")}


@pytest.mark.parametrize("charset, name", [("\\ISO 2022 IR 87", JAPANESE), ("\\ISO 2022 IR 149", KOREAN)])
def test_responses_are_written_in_code_extensions(charset, name):
    """Deliberate difference (README 19): to a request in code extensions the response is written in them,
    the first set active again before each delimiter, exactly as PS3.5's examples."""
    assert convert_values({PN: ("PN", name[1].encode())}, "ISO_IR 192", charset) == {PN: name[0]}
    assert convert_values({PN: ("PN", name[0])}, charset, "ISO_IR 192") == {PN: name[1].encode()}


def test_code_extensions_without_the_character_fail():
    with pytest.raises(CharsetError, match="Invalid or incomplete"):
        convert_values({PN: ("PN", "김".encode())}, "ISO_IR 192", "\\ISO 2022 IR 87")
    assert convert_values({PN: ("PN", "Müller".encode())}, "ISO_IR 192", "ISO 2022 IR 6\\ISO 2022 IR 100") == {
        PN: b"M\x1b-A\xfcller"}


def test_duplicate_terms_are_ignored_with_a_warning(dcmtk_log):
    source = select_source("ISO 2022 IR 100\\ISO 2022 IR 100")
    assert source.code_extensions and source.to_utf8(b"\xfc", "LO") == "ü".encode()
    assert dcmtk_log == ["W: DcmSpecificCharacterSet: 'ISO 2022 IR 100' is defined more than once in "
                         "SpecificCharacterSet (0008,0005), ignoring the duplicate definition"]
    assert not select_source("ISO_IR 100").code_extensions


@pytest.mark.parametrize("value, charset, message", [
    (b"Bad\xff", "ISO_IR 192", ILLEGAL_CHARACTER),
    (b"M\xfcller", "", ILLEGAL_CHARACTER),          # the default repertoire is 7-bit
])
def test_to_utf8_failures(value, charset, message):
    with pytest.raises(CharsetError) as failure:
        to_utf8(value, charset, "PN")
    assert str(failure.value) == message


# --- converting values --------------------------------------------------------------------------------------------

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


@pytest.mark.parametrize("destination", ["\\ISO 2022 IR 999", "ISO 2022 IR 100", "ISO 2022 IR 87\\ISO_IR 100",
                                         "ISO_IR 999"])
def test_destinations_that_cannot_be_selected(destination, dcmtk_log):
    """Unknown terms, a single ISO 2022 term and a multi-byte first value are no destination (as DCMTK)."""
    with pytest.raises(CharsetError) as failure:
        convert_values({PN: ("PN", b"Doe")}, "ISO_IR 100", destination)
    assert str(failure.value) == ("Cannot select destination character set: SpecificCharacterSet (0008,0005) "
                                  f"value '{destination}' not supported")
    assert dcmtk_log == []     # selecting fails before any conversion


def test_destination_is_selected_before_the_source(dcmtk_log):
    """Observed: an unsupported record to an unsupported request names the destination; an ISO_IR 6
    destination warns before the source fails."""
    with pytest.raises(CharsetError, match="Cannot select destination"):
        convert_values({PN: ("PN", b"Doe")}, "ISO_IR 999", "ISO 2022 IR 100")
    with pytest.raises(CharsetError, match="Cannot select source"):
        convert_values({PN: ("PN", b"Doe")}, "ISO_IR 999", "ISO_IR 6")
    assert dcmtk_log == ["W: DcmSpecificCharacterSet: 'ISO_IR 6' is not a defined term in DICOM, "
                         "will be treated as an empty value (ASCII)"]


def test_code_extensions_converted_to_a_single_set(dcmtk_log):
    """Converted part by part: the first part that does not fit stops the conversion (one warning, observed)."""
    value = b"\x1b-AM\xfcller^\x1b-AJ\xf6rg"
    assert convert_values({PN: ("PN", value)}, "\\ISO 2022 IR 100", "ISO_IR 100") == {
        PN: "Müller^Jörg".encode("latin-1")}
    assert dcmtk_log == [FIRST_GROUP_ESCAPE] * 2
    dcmtk_log.clear()
    with pytest.raises(CharsetError, match="Invalid or incomplete"):
        convert_values({PN: ("PN", value)}, "\\ISO 2022 IR 100", "")
    assert dcmtk_log == [FIRST_GROUP_ESCAPE, "W: DcmItem: An error occurred during the conversion to ASCII "
                         "encoding, the value of SpecificCharacterSet (0008,0005) is not updated"]


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


# --- converting responses -----------------------------------------------------------------------------------------

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


# --- responses to ISO 2022 requests (observed: DCMTK cannot convert to them) --------------------------------------

def _destination_failure(source: str, destination: str) -> str:
    return (f'W: Converting response from character set "{source}" to character set "{destination}" failed, '
            f"(error message: Cannot select destination character set: SpecificCharacterSet (0008,0005) "
            f"value '{destination}' not supported)")


def test_ascii_record_for_a_single_iso_2022_term_request(dcmtk_log):
    """A single ISO 2022 term is no destination (as DCMTK): sent as it is, without Specific Character Set:
    the fall-back (ASCII) is not necessary."""
    values = {PN: ("PN", b"Doe^John")}
    assert convert_response(values, "", "ISO 2022 IR 100", CharsetPolicy()) == ({PN: b"Doe^John"}, "")
    assert dcmtk_log == [_destination_failure("ASCII", "ISO 2022 IR 100"),
                         'I: Conversion to fall-back character set "ASCII" is not necessary, '
                         "since the original character set is compatible"]


@pytest.mark.parametrize("request_charset", ["\\ISO 2022 IR 87", "ISO 2022 IR 6\\ISO 2022 IR 100"])
def test_records_for_a_code_extension_request(request_charset, dcmtk_log):
    """Deliberate difference (README 19): converted to the request's code extensions."""
    values = {PN: ("PN", b"Doe^John")}
    assert convert_response(values, "", request_charset, CharsetPolicy()) == ({PN: b"Doe^John"}, request_charset)
    assert dcmtk_log == [f'I: Successfully converted response from character set "ASCII" to character set '
                         f'"{request_charset}"']
    latin = {PN: ("PN", "Müller".encode("latin-1"))}
    if request_charset.endswith("100"):
        assert convert_response(latin, "ISO_IR 100", request_charset, CharsetPolicy()) == (
            {PN: b"M\x1b-A\xfcller"}, request_charset)


@pytest.mark.parametrize("record, value", [("ISO_IR 100", "Müller^Jörg".encode("latin-1")),
                                           ("ISO_IR 192", "Παπαδόπουλος".encode())])
def test_latin1_and_utf8_records_for_an_iso_2022_request(record, value, dcmtk_log):
    """Sent unchanged in their own character set after the fall-back to ASCII failed too."""
    values = {PN: ("PN", value)}
    assert convert_response(values, record, "ISO 2022 IR 100", CharsetPolicy()) == ({PN: value}, record)
    assert dcmtk_log == [
        _destination_failure(record, "ISO 2022 IR 100"),
        f'I: Trying to convert response from character set "{record}" to fall-back character set "ASCII" instead',
        "W: DcmItem: An error occurred during the conversion to ASCII encoding, "
        "the value of SpecificCharacterSet (0008,0005) is not updated",
        f'W: Converting response from character set "{record}" to character set "ASCII" failed, '
        f"(error message: {ILLEGAL_CHARACTER})",
    ]


def test_latin9_and_japanese_records_for_a_utf8_request(dcmtk_log):
    """Deliberate difference (README 19): records in sets Debian's iconv cannot open are converted."""
    values = {PN: ("PN", "Müller^€".encode("iso8859_15"))}
    assert convert_response(values, "ISO_IR 203", "ISO_IR 192", CharsetPolicy()) == (
        {PN: "Müller^€".encode()}, "ISO_IR 192")
    assert convert_response({PN: ("PN", JAPANESE[0])}, "\\ISO 2022 IR 87", "ISO_IR 192", CharsetPolicy()) == (
        {PN: JAPANESE[1].encode()}, "ISO_IR 192")
    assert dcmtk_log == [
        'I: Successfully converted response from character set "ISO_IR 203" to character set "ISO_IR 192"',
        'I: Successfully converted response from character set "\\ISO 2022 IR 87" to character set "ISO_IR 192"']
