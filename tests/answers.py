"""Comparing our C-FIND answers with DCMTK's, where they differ on purpose only in character sets.

An answer is a list of responses, each a list of findscu's dump lines. DCMTK's Debian build cannot read
``ISO 2022 IR 87``/``159`` and ``ISO_IR 203``, nor write ISO 2022 code extensions, and sends such
responses unconverted; we convert them to the request's character set (README difference 19). Such a
response must carry the same text, in DCMTK's character set or in the request's.
"""
from __future__ import annotations

CHARSET_LINE = "(0008,0005) CS SpecificCharacterSet"
#: The character sets DCMTK cannot convert from and we do.
CONVERTED_BY_US = ("ISO 2022 IR 87", "ISO 2022 IR 159", "ISO_IR 203")


def _charset(response: list[str]) -> str | None:
    return next((line for line in response if line.startswith(CHARSET_LINE)), None)


def _text(response: list[str]) -> list[str]:
    """The response without its character set, values in JIS code extensions (findscu shows their bytes)
    as text."""
    return [line.encode().decode("iso2022_jp") if "\x1b" in line else line
            for line in response if not line.startswith(CHARSET_LINE)]


def assert_same_answers(ours: list[list[str]], theirs: list[list[str]], request_charset: str = "") -> None:
    """``ours`` equals DCMTK's ``theirs`` response by response, but where we converted what DCMTK could not."""
    assert len(ours) == len(theirs), (ours, theirs)
    converted = f"{CHARSET_LINE} [{request_charset}]" if request_charset else None
    to_code_extensions = "\\" in request_charset or request_charset in CONVERTED_BY_US
    for our_response, their_response in zip(ours, theirs):
        their_charset = _charset(their_response) or ""
        if not to_code_extensions and not any(term in their_charset for term in CONVERTED_BY_US):
            assert our_response == their_response
            continue
        assert _charset(our_response) in (their_charset or None, converted), our_response
        assert _text(our_response) == _text(their_response)


def request_charset(keys: list[str] | tuple[str, ...]) -> str:
    """The Specific Character Set among findscu's ``-k`` keys (``""``: none)."""
    return next((key.split("=", 1)[1] for key in keys if key.startswith("SpecificCharacterSet=")), "")
