"""``-xf`` association negotiation profiles (qrscp.config.association_profiles) against DCMTK 3.6.7's ``dcmqrscp -xf``.

Every expected value below was observed with the real ``/usr/bin/dcmqrscp -xf FILE IN OUT`` (Debian
3.6.7-9~deb12u4): its fatal messages for broken files, and the A-ASSOCIATE-AC it sends for the proposals
of ``TS_PROPOSALS`` / ``ROLE_PROPOSALS``. The tests marked ``needs_dcmtk`` repeat those observations live.
"""
from __future__ import annotations

import ctypes
import random
import re
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    Server,
    dcmtk,
    dcmtk_env,
    free_port,
    needs_dcmtk,
    run_dcmtk,
    run_qrscp,
    simple_config,
)
from corpus import make_ct, write_instance

from qrscp.config import association_profiles as assocconfig
from qrscp.config.association_profiles import (
    AssocConfigError,
    Profile,
    RoleAnswer,
    accepted_role,
    accepted_transfer_syntax,
    load_profiles,
)
from qrscp.dicom.uids import UID_BY_DCMTK_NAME
from qrscp.net import pdu

LEI = "1.2.840.10008.1.2"
LEE = "1.2.840.10008.1.2.1"
BEE = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
US = "1.2.840.10008.5.1.4.1.1.6.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
CR = "1.2.840.10008.5.1.4.1.1.1"
PET = "1.2.840.10008.5.1.4.1.1.128"
VERIFICATION = "1.2.840.10008.1.1"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
PRIVATE = "1.2.826.0.1.3680043.8.498.1"
OTHER_PRIVATE = "1.2.826.0.1.3680043.8.498.2"

#: The profiles the negotiation tests run with (names with spaces, '=' before a name, numeric UIDs, ...).
PROFILES = r"""# qrscp test profiles in DCMTK's association configuration format
[[TransferSyntaxes]]
[JPEG Lossless]
TransferSyntax1 = JPEGLossless:Non-hierarchical-1stOrderPrediction
TransferSyntax2 = LocalEndianExplicit
[Uncompressed]
TransferSyntax1 = LittleEndianExplicit
TransferSyntax2 = BigEndianExplicit
TransferSyntax3 = LittleEndianImplicit
[ImplicitOnly]
TransferSyntax1 = =LittleEndianImplicit
[ImplicitFirst]
TransferSyntax1 = 1.2.840.10008.1.2
TransferSyntax2 = 1.2.840.10008.1.2.1
[JPEGBaseline]
TransferSyntax1 = JPEGBaseline

[[PresentationContexts]]
[Incoming]
PresentationContext1 = CTImageStorage\JPEG Lossless
PresentationContext2 = MRImageStorage\ImplicitOnly
PresentationContext3 = UltrasoundImageStorage\ImplicitFirst
PresentationContext4 = SecondaryCaptureImageStorage\Uncompressed
PresentationContext5 = ComputedRadiographyImageStorage\Uncompressed
PresentationContext6 = VerificationSOPClass\ImplicitOnly
PresentationContext7 = FINDStudyRootQueryRetrieveInformationModel\ImplicitOnly
PresentationContext8 = FINDPatientRootQueryRetrieveInformationModel\JPEGBaseline
PresentationContext9 = FINDModalityWorklistInformationModel\Uncompressed
PresentationContext10 = 1.2.826.0.1.3680043.8.498.1\ImplicitFirst
[Outgoing]
PresentationContext1 = MRImageStorage\JPEG Lossless
PresentationContext2 = CTImageStorage\JPEG Lossless
PresentationContext3 = CTImageStorage\Uncompressed
PresentationContext4 = UltrasoundImageStorage\ImplicitFirst
PresentationContext5 = SecondaryCaptureImageStorage\Uncompressed

[[SCPSCURoleSelection]]
[Roles]
Role1 = ComputedRadiographyImageStorage\SCP
Role2 = MRImageStorage\scu
Role3 = UltrasoundImageStorage\Both
Role4 = VerificationSOPClass\SCP
[Outgoing Roles]
Role1 = CTImageStorage\SCP
Role2 = UltrasoundImageStorage\BOTH
Role3 = SecondaryCaptureImageStorage\SCU

[[ExtendedNegotiation]]
[Ext]
ExtendedNegotiation1 = SecondaryCaptureImageStorage\0102
ExtendedNegotiation2 = UltrasoundImageStorage\0a0B0c

[[Profiles]]
[In Profile]
PresentationContexts = Incoming
SCPSCURoleSelection = Roles
ExtendedNegotiation = Ext
[Out]
PresentationContexts = Outgoing
SCPSCURoleSelection = Outgoing Roles
ExtendedNegotiation = Ext
"""

EXTENDED = {SC: b"\x01\x02", US: b"\x0a\x0b\x0c"}
INCOMING = Profile(
    [(CT, [JPEG_LOSSLESS, LEE]), (MR, [LEI]), (US, [LEI, LEE]), (SC, [LEE, BEE, LEI]), (CR, [LEE, BEE, LEI]),
     (VERIFICATION, [LEI]), (STUDY_FIND, [LEI]), (PATIENT_FIND, [JPEG_BASELINE]), (WORKLIST_FIND, [LEE, BEE, LEI]),
     (PRIVATE, [LEI, LEE])],
    {CR: (False, True), MR: (True, False), US: (True, True), VERIFICATION: (False, True)}, EXTENDED)
OUTGOING = Profile(
    [(MR, [JPEG_LOSSLESS, LEE]), (CT, [JPEG_LOSSLESS, LEE]), (CT, [LEE, BEE, LEI]), (US, [LEI, LEE]),
     (SC, [LEE, BEE, LEI])],
    {CT: (False, True), US: (True, True), SC: (True, False)}, EXTENDED)


def write(directory: Path, text: str | bytes, name: str = "profiles.cfg") -> str:
    path = directory / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("latin-1"))
    return str(path)


def test_reads_the_profiles_with_resolved_uids(tmp_path):
    assert load_profiles(write(tmp_path, PROFILES), "In Profile", "Out") == (INCOMING, OUTGOING)


def test_profile_names_lose_white_space_and_case(tmp_path):
    path = write(tmp_path, PROFILES)
    assert load_profiles(path, " in\tPROFILE ", "out") == (INCOMING, OUTGOING)
    with pytest.raises(AssocConfigError, match=r"^unknown configuration profile name: In\.Profile$"):
        load_profiles(path, "In.Profile", "Out")


# --- broken files: DCMTK's messages -------------------------------------------------------------------------------

BASE = r"""[[TransferSyntaxes]]
[Unc]
TransferSyntax1 = LittleEndianExplicit
TransferSyntax2 = LittleEndianImplicit
[[PresentationContexts]]
[PC]
PresentationContext1 = CTImageStorage\Unc
[[Profiles]]
[P]
PresentationContexts = PC
"""
ROLES = "[[SCPSCURoleSelection]]\n[R]\nRole1 = {}\n[[Profiles]]"
EXT = "[[ExtendedNegotiation]]\n[E]\nExtendedNegotiation1 = {}\n[[Profiles]]"
READ = "cannot read association config file: "


def base(old: str = "", new: str = "", profile_lines: str = "") -> str:
    return BASE.replace(old, new) + profile_lines if old else BASE + profile_lines


def with_roles(role: str) -> str:
    return base("[[Profiles]]", ROLES.format(role), "SCPSCURoleSelection = R\n")


def with_extended(item: str) -> str:
    return base("[[Profiles]]", EXT.format(item), "ExtendedNegotiation = E\n")


def many_contexts(count: int, last: str = "") -> str:
    lines = [f"PresentationContext{n} = 1.2.{n}\\Unc" for n in range(1, count + 1)]
    return base("PresentationContext1 = CTImageStorage\\Unc", "\n".join(lines) + last)


#: (case, file text, in-profile, out-profile, message after "F: ")
ERRORS = [
    ("no transfer syntaxes", base("[[TransferSyntaxes]]", "[[TS]]"), "P", "P",
     READ + "cannot find section [[TRANSFERSYNTAXES]] in config file"),
    ("no presentation contexts", base("[[PresentationContexts]]", "[[PCs]]"), "P", "P",
     READ + "cannot find section [[PRESENTATIONCONTEXTS]] in config file"),
    ("no profiles", base("[[Profiles]]", "[[Profile]]"), "P", "P",
     READ + "cannot find section [[PROFILES]] in config file"),
    ("unknown transfer syntax name", base("LittleEndianImplicit", "FooBar"), "P", "P",
     READ + "not a valid transfer syntax UID: FooBar"),
    ("names are case-sensitive", base("LittleEndianImplicit", "littleendianimplicit"), "P", "P",
     READ + "not a valid transfer syntax UID: littleendianimplicit"),
    ("values keep trailing blanks", base("LittleEndianImplicit", "LittleEndianImplicit  "), "P", "P",
     READ + "not a valid transfer syntax UID: LittleEndianImplicit  "),
    ("one '=' before a name only", base("LittleEndianImplicit", "==LittleEndianImplicit"), "P", "P",
     READ + "not a valid transfer syntax UID: ==LittleEndianImplicit"),
    ("'=' before a UID", base("LittleEndianImplicit", "=1.2"), "P", "P",
     READ + "not a valid transfer syntax UID: =1.2"),
    ("letters in a UID", base("LittleEndianImplicit", "1.2.a"), "P", "P",
     READ + "not a valid transfer syntax UID: 1.2.a"),
    ("empty transfer syntax", base("LittleEndianImplicit", ""), "P", "P",
     READ + "not a valid transfer syntax UID: "),
    ("context without backslash", base("CTImageStorage\\Unc", "CTImageStorage"), "P", "P",
     READ + "syntax error: missing '\\' in entry PRESENTATIONCONTEXT1 in config file"),
    ("undefined transfer syntax list", base("CTImageStorage\\Unc", "CTImageStorage\\Nope"), "P", "P",
     READ + "transfer syntax key undefined: NOPE"),
    ("a second backslash belongs to the key", base("CTImageStorage\\Unc", "CTImageStorage\\Unc\\X"), "P", "P",
     READ + "transfer syntax key undefined: UNC\\X"),
    ("an empty section defines nothing",
     base("[[PresentationContexts]]", "[Empty]\n[[PresentationContexts]]").replace("\\Unc", "\\Empty"), "P", "P",
     READ + "transfer syntax key undefined: EMPTY"),
    ("indented comment continues the value", base("[[Profiles]]", "  # comment\n[[Profiles]]"), "P", "P",
     READ + "transfer syntax key undefined: UNC#COMMENT"),
    ("empty abstract syntax", base("CTImageStorage\\Unc", "\\Unc"), "P", "P",
     READ + "Illegal call, perhaps wrong parameters"),
    ("unknown abstract syntax name", base("CTImageStorage", "FooStorage"), "P", "P",
     READ + "not a valid abstract syntax UID: FooStorage"),
    ("abstract syntax with a blank", base("CTImageStorage", "CTImageStorage "), "P", "P",
     READ + "not a valid abstract syntax UID: CTImageStorage "),
    ("continued abstract syntax", base("CTImageStorage", "CTI\n mageStorage"), "P", "P",
     READ + "not a valid abstract syntax UID: CTI\nmageStorage"),
    ("129 contexts", many_contexts(129), "P", "P",
     READ + "presentation context list too long (> 128 entries): PC"),
    ("sections of one name are merged", many_contexts(128, "\n[PC]\nPresentationContext1 = 1.3\\Unc"), "P", "P",
     READ + "presentation context list too long (> 128 entries): PC"),
    ("role without backslash", with_roles("CTImageStorage"), "P", "P",
     READ + "syntax error: missing '\\' in entry ROLE1 in config file"),
    ("unknown role", with_roles("CTImageStorage\\xyz"), "P", "P",
     READ + "syntax error: unknown role key in entry ROLE1 in config file"),
    ("role with a blank", with_roles("CTImageStorage\\ SCP"), "P", "P",
     READ + "syntax error: unknown role key in entry ROLE1 in config file"),
    ("role for an unknown name", with_roles("Foo\\SCP"), "P", "P",
     READ + "not a valid abstract syntax UID: Foo"),
    ("role twice", with_roles("CTImageStorage\\SCP\nRole2 = 1.2.840.10008.5.1.4.1.1.2\\SCU"), "P", "P",
     READ + "role selection defined twice for abstract syntax UID: 1.2.840.10008.5.1.4.1.1.2"),
    ("role outside the contexts", with_roles("MRImageStorage\\SCP"), "P", "P",
     READ + "abstract syntax defined in role selection list 'R' but not in presentation context list 'PC': "
     "1.2.840.10008.5.1.4.1.1.4"),
    ("undefined role list", base(profile_lines="SCPSCURoleSelection = Nope\n"), "P", "P",
     READ + "role selection key undefined: NOPE"),
    ("extended negotiation without backslash", with_extended("CTImageStorage"), "P", "P",
     READ + "syntax error: missing '\\' in entry EXTENDEDNEGOTIATION1 in config file"),
    ("odd number of hex digits", with_extended("CTImageStorage\\02000"), "P", "P",
     READ + "parse error in extended negotiation data in entry EXTENDEDNEGOTIATION1 in config file"),
    ("blank in the hex digits", with_extended("CTImageStorage\\02 00"), "P", "P",
     READ + "parse error in extended negotiation data in entry EXTENDEDNEGOTIATION1 in config file"),
    ("1024 bytes of extended negotiation", with_extended("CTImageStorage\\" + "00" * 1024), "P", "P",
     READ + "extended negotiation data too long, cannot handle > 1024 bytes in entry EXTENDEDNEGOTIATION1 "
     "in config file"),
    ("no extended negotiation data", with_extended("Foo\\"), "P", "P",
     READ + "Illegal call, perhaps wrong parameters"),
    ("extended negotiation twice", with_extended("CTImageStorage\\00\nExtendedNegotiation2 = CTImageStorage\\01"),
     "P", "P", READ + "extended negotiation defined twice for abstract syntax UID: CTImageStorage"),
    ("extended negotiation outside the contexts", with_extended("MRImageStorage\\00"), "P", "P",
     READ + "abstract syntax defined in role selection list 'E' but not in presentation context list 'PC': "
     "1.2.840.10008.5.1.4.1.1.4"),
    ("undefined extended negotiation", base(profile_lines="ExtendedNegotiation = Nope\n"), "P", "P",
     READ + "extended negotiation key undefined: NOPE"),
    ("profile without contexts", base("PresentationContexts = PC", "Contexts = PC"), "P", "P",
     READ + "no PRESENTATIONCONTEXTS  entry in section P in config file"),
    ("profile with undefined contexts", base("PresentationContexts = PC", "PresentationContexts = Nope"), "P", "P",
     READ + "presentation context key undefined: NOPE"),
    ("profile twice names its contexts", base(profile_lines="[P]\nPresentationContexts = PC\n"), "P", "P",
     READ + "two profiles defined for key: PC"),
    ("unknown incoming profile", BASE, "No pe", "x", "unknown configuration profile name: No pe"),
    ("unknown outgoing profile", BASE, "p", "x", "unknown configuration profile name: x"),
    ("unknown outgoing profile before duplicates",
     base("[[Profiles]]", "PresentationContext2 = 1.2.840.10008.5.1.4.1.1.2\\Unc\n[[Profiles]]"), "P", "Q",
     "unknown configuration profile name: Q"),
    ("duplicate abstract syntax incoming",
     base("[[Profiles]]", "PresentationContext2 = 1.2.840.10008.5.1.4.1.1.2\\Unc\n[[Profiles]]"), " p", "P",
     "profile ' p' is not valid for incoming use, duplicate abstract syntaxes found"),
]


@pytest.mark.parametrize("text, in_profile, out_profile, message", [case[1:] for case in ERRORS],
                         ids=[case[0] for case in ERRORS])
def test_broken_files_fail_as_in_dcmtk(tmp_path, text, in_profile, out_profile, message):
    with pytest.raises(AssocConfigError) as raised:
        load_profiles(write(tmp_path, text), in_profile, out_profile)
    assert str(raised.value) == message


def test_unreadable_files(tmp_path):
    missing = str(tmp_path / "missing.cfg")
    with pytest.raises(AssocConfigError) as raised:
        load_profiles(missing, "a", "b")
    assert str(raised.value) == READ + f"unable to open configuration file: {missing}"
    with pytest.raises(AssocConfigError) as raised:  # DCMTK opens a directory and finds nothing in it
        load_profiles(str(tmp_path), "a", "b")
    assert str(raised.value) == READ + "cannot find section [[TRANSFERSYNTAXES]] in config file"


@needs_dcmtk
def test_dcmtk_fails_with_the_same_messages(tmp_path):
    config = write(tmp_path, simple_config().replace("{port}", "104"), "qr.cfg")
    cases = [*ERRORS, ("missing file", None, "a", "b", READ + "unable to open configuration file: MISSING")]
    for case, text, in_profile, out_profile, message in cases:
        path = write(tmp_path, text) if text is not None else str(tmp_path / "missing.cfg")
        result = run_dcmtk("dcmqrscp", "-c", config, "-xf", path, in_profile, out_profile, str(free_port()),
                           timeout=20)
        expected = "".join(f"F: {line}\n" for line in message.replace("MISSING", path).split("\n"))
        assert (result.returncode, result.stderr.decode("latin-1")) == (1, expected), case


#: Characters the random files are mutated with: everything the reader treats specially.
MUTATIONS = [" ", "\t", "#", "[", "]", "\\", "=", "x", "\r", "\n", "\n ", "\n#", ".", "\v", "\0", "\xe9", "\r\n"]


def dcmtk_outcome(directory: Path, path: str, in_profile: str, out_profile: str) -> str:
    """What dcmqrscp -xf makes of a file: its fatal message lines, or "started"."""
    port = free_port()
    config = write(directory, simple_config().replace("{port}", str(port)), "qr.cfg")
    process = subprocess.Popen([dcmtk("dcmqrscp"), "-c", config, "-xf", path, in_profile, out_profile, str(port)],
                               env=dcmtk_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.005)
            continue
        process.kill()
        process.wait()
        return "started"
    if process.poll() is None:
        process.kill()
        process.wait()
        return "hung"
    return process.stderr.read().decode("latin-1")


def our_outcome(path: str, in_profile: str, out_profile: str) -> str:
    try:
        load_profiles(path, in_profile, out_profile)
    except AssocConfigError as error:
        return "".join(f"F: {line}\n" for line in str(error).split("\n"))
    return "started"


@needs_dcmtk
def test_randomly_mutated_files_read_as_dcmtk_reads_them(tmp_path, long_run):
    rng = random.Random(20240607)
    originals = [PROFILES, BASE + "SCPSCURoleSelection = R\n" + ROLES.format("CTImageStorage\\SCP")]
    for case in range(1000 if long_run else 25):
        text = rng.choice(originals)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(text) + 1)
            text = text[:position] + rng.choice(MUTATIONS) + text[position:]
        path = write(tmp_path, text)
        profiles = rng.choice([("In Profile", "Out"), ("inprofile", "P"), ("P", "P"), ("p ", "In Profile")])
        assert our_outcome(path, *profiles) == dcmtk_outcome(tmp_path, path, *profiles), (case, text)


# --- valid files: how DCMTK reads them ----------------------------------------------------------------------------

SIMPLE = Profile([(CT, [LEE, LEI])])

#: (case, file text, expected profile "P")
VALID = [
    ("names with '=', LocalEndianExplicit, OppositeEndianExplicit",
     base("LittleEndianExplicit\n", "=LocalEndianExplicit\nTransferSyntax3 = OppositeEndianExplicit\n")
     .replace("CTImageStorage", "=CTImageStorage"), Profile([(CT, [LEE, LEI, BEE])])),
    ("any valid UID, even a SOP class or '.1'",
     base("LittleEndianImplicit", "CTImageStorage\nTransferSyntax3 = .1"), Profile([(CT, [LEE, CT, ".1"])])),
    ("numbering stops at the first gap", base("TransferSyntax2", "TransferSyntax3"), Profile([(CT, [LEE])])),
    ("numbers without leading zeros", base("TransferSyntax1 =", "TransferSyntax01 = 1.2\nTransferSyntax1 ="),
     SIMPLE),
    ("the first of equal keys wins", base("PresentationContext1 = CTImageStorage\\Unc",
                                          "PresentationContext1 = CTImageStorage\\Unc\n"
                                          "PresentationContext1 = MRImageStorage\\Unc"), SIMPLE),
    ("keys and headings: case, blanks and punctuation dropped",
     base("TransferSyntax1", "transfer syntax.1").replace("[[PresentationContexts]]", "[[ presentation contexts ]]")
     .replace("[PC]", "[p.c]"), SIMPLE),
    ("references: blanks dropped, upper-cased", base("\\Unc", "\\ u n c").replace("= PC", "= p\n  c"), SIMPLE),
    ("sections of one name are merged, duplicates kept",
     base("[[PresentationContexts]]", "[Unc]\nTransferSyntax1 = JPEGBaseline\nTransferSyntax2 = JPEGBaseline\n"
          "[[PresentationContexts]]"), Profile([(CT, [LEE, LEI, JPEG_BASELINE, JPEG_BASELINE])])),
    ("only the first supersection of a name counts",
     base("[[PresentationContexts]]", "[[TransferSyntaxes]]\n[Unc]\nTransferSyntax1 = JPEGBaseline\n"
          "[[PresentationContexts]]"), SIMPLE),
    ("comments, CRLF, NUL as blank, entries outside sections dropped",
     ("TransferSyntax1 = 1.2\n[Orphan]\n# comment\n" + base("= PC", "= P\0C")).replace("\n", "\r\n"), SIMPLE),
    ("CR line ends, [[[deeper]]] headings", base("[[Profiles]]", "[[[Profiles]]]").replace("\n", "\r"), SIMPLE),
    ("roles and extended negotiation by name or UID, 'RoleSelection' ignored",
     base("[[Profiles]]", "[[SCPSCURoleSelection]]\n[R]\nRole1 = 1.2.840.10008.5.1.4.1.1.2\\both\n"
          "[[ExtendedNegotiation]]\n[E]\nExtendedNegotiation1 = CTImageStorage\\0aFF\n[[Profiles]]",
          "SCPSCURoleSelection = R\nExtendedNegotiation = E\nRoleSelection = ignored\n"),
     Profile([(CT, [LEE, LEI])], {CT: (True, True)}, {CT: b"\x0a\xff"})),
    ("1023 bytes of extended negotiation", with_extended("CTImageStorage\\" + "00" * 1023),
     Profile([(CT, [LEE, LEI])], {}, {CT: bytes(1023)})),
]


@pytest.mark.parametrize("text, expected", [case[1:] for case in VALID], ids=[case[0] for case in VALID])
def test_valid_files_read_as_dcmtk_reads_them(tmp_path, text, expected):
    assert load_profiles(write(tmp_path, text), "P", "P") == (expected, expected)


@needs_dcmtk
def test_dcmtk_accepts_the_valid_files(tmp_path):
    for number, (_, text, _) in enumerate(VALID):
        directory = tmp_path / str(number)
        directory.mkdir()
        Server(directory, simple_config(), "-xf", write(directory, text), "P", "P", dcmtk_server=True).stop()


@pytest.mark.skipif(not Path("/etc/dcmtk/storescp.cfg").exists(), reason="Debian's DCMTK examples missing")
def test_debian_examples():
    incoming, outgoing = load_profiles("/etc/dcmtk/storescp.cfg", "Default", "AllDICOM")
    assert len(incoming.contexts) == len(outgoing.contexts) == 128
    assert incoming.contexts[0] == (VERIFICATION, [LEE, BEE, LEI])
    assert incoming.contexts[4][0] == CT and len(incoming.contexts[4][1]) == 21
    assert incoming.contexts[4][1][:5] == ["1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.90",
                                           "1.2.840.10008.1.2.4.51", JPEG_BASELINE, JPEG_LOSSLESS]
    with pytest.raises(AssocConfigError) as raised:  # storescu's profile proposes CT three times
        load_profiles("/etc/dcmtk/storescu.cfg", "Default", "Default")
    assert str(raised.value) == "profile 'Default' is not valid for incoming use, duplicate abstract syntaxes found"


# --- DCMTK's UID names --------------------------------------------------------------------------------------------

def test_dcmtk_names_are_not_pydicom_keywords():
    resolve = assocconfig.resolve_uid
    assert resolve("JPEGLossless:Non-hierarchical-1stOrderPrediction") == JPEG_LOSSLESS
    assert resolve("JPEGLossless") is None  # pydicom's keyword for 1.2.840.10008.1.2.4.57
    assert resolve("ExplicitVRLittleEndian") is None
    assert resolve("MultiframeTrueColorSecondaryCaptureImageStorage") == "1.2.840.10008.5.1.4.1.1.7.4"
    assert resolve("RETIRED_UltrasoundImageStorage") == "1.2.840.10008.5.1.4.1.1.6"
    assert resolve("FINDModalityWorklistInformationModel") == WORKLIST_FIND
    assert resolve("SRI24FrameOfReferenc") == "1.2.840.10008.1.4.4.1"  # DCMTK's typo
    assert resolve("HighThroughputJPEG2000ImageCompressionLosslessOnly") == "1.2.840.10008.1.2.4.201"  # 3.7.0's
    assert resolve("HTJ2KLossless") is None
    assert len(UID_BY_DCMTK_NAME) == 436 + 41   # DCMTK 3.6.7's names, then those of the UIDs 3.7.0 added


LIBDCMDATA = Path("/usr/lib/x86_64-linux-gnu/libdcmdata.so.17")


@pytest.mark.skipif(not LIBDCMDATA.exists(), reason="DCMTK's libdcmdata is not installed")
def test_name_table_is_dcmtks():
    """Every name 3.6.7 knows maps as DCMTK 3.6.7 maps it, every UID it names is in the table, and the
    rest of the table are UIDs 3.6.7 does not know (3.7.0's)."""
    library = ctypes.CDLL(str(LIBDCMDATA))
    uid_from_name = library._Z18dcmFindUIDFromNamePKc
    name_of_uid = library._Z16dcmFindNameOfUIDPKcS0_
    uid_from_name.restype = name_of_uid.restype = ctypes.c_char_p
    uid_from_name.argtypes = [ctypes.c_char_p]
    name_of_uid.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    known = {name: uid for name, uid in UID_BY_DCMTK_NAME.items() if name_of_uid(uid.encode(), None)}
    newer = {name: uid for name, uid in UID_BY_DCMTK_NAME.items() if name not in known}
    assert len(newer) == 41 and not any(uid_from_name(name.encode()) for name in newer)
    table = known
    assert {name: uid_from_name(name.encode()).decode() for name in table} == table
    uids = set(re.findall(rb"(?<=\0)[0-9]+(?:\.[0-9]+)+(?=\0)", LIBDCMDATA.read_bytes()))
    named = {name_of_uid(uid, None).decode(): uid.decode() for uid in uids if name_of_uid(uid, None)}
    assert named == table


# --- negotiation: what dcmqrscp -xf answers -----------------------------------------------------------------------

#: dcmqrscp's own non-storage contexts (default options) and their transfer syntax preference
SERVICES = {VERIFICATION, *(f"1.2.840.10008.5.1.4.1.2.{model}.{op}" for model in (1, 2, 3) for op in (1, 2, 3))}
DEFAULT_PREFERENCE = [LEE, BEE, LEI]

#: (abstract syntax, proposed transfer syntaxes) -> (result, accepted transfer syntax), all in one association
TS_PROPOSALS = [
    ((CT, [LEI, LEE, JPEG_LOSSLESS]), (0, JPEG_LOSSLESS)),   # the profile's order decides
    ((CT, [LEI, LEE]), (0, LEE)),
    ((CT, [LEI]), (4, "")),
    ((CT, [JPEG_BASELINE]), (4, "")),
    ((MR, [LEE, LEI]), (0, LEI)),
    ((MR, [LEE]), (4, "")),
    ((US, [LEE, LEI]), (0, LEI)),
    ((US, [BEE]), (4, "")),
    ((SC, [LEI, BEE]), (0, BEE)),
    ((CR, [LEE]), (3, "")),                                  # role SCP only, requestor keeps SCU: refused
    ((PET, [LEE]), (3, "")),                                 # storage, but not in the profile
    ((VERIFICATION, [LEI, LEE]), (0, LEE)),                  # dcmqrscp's own list overrides the profile
    ((VERIFICATION, [JPEG_BASELINE]), (4, "")),
    ((STUDY_FIND, [BEE]), (0, BEE)),
    ((PATIENT_FIND, [JPEG_BASELINE]), (0, JPEG_BASELINE)),   # accepted by the profile, kept
    ((PATIENT_FIND, [JPEG_LOSSLESS]), (4, "")),
    ((STUDY_MOVE, [LEI]), (0, LEI)),                         # not in the profile, dcmqrscp's own
    ((STUDY_MOVE, [JPEG_BASELINE]), (4, "")),
    ((WORKLIST_FIND, [LEI, LEE]), (0, LEE)),                 # in the profile only: accepted
    ((WORKLIST_FIND, [JPEG_BASELINE]), (4, "")),
    ((PRIVATE, [LEE, LEI]), (0, LEI)),
    ((OTHER_PRIVATE, [LEE]), (3, "")),
]

ROLE_CONTEXTS = [(CR, [LEE]), (CR, [JPEG_BASELINE]), (MR, [LEI]), (US, [LEE]), (SC, [LEE]), (VERIFICATION, [LEI])]
#: proposed (SCU, SCP) for every abstract syntax of ROLE_CONTEXTS -> (results, accepted roles in the AC)
ROLE_PROPOSALS = {
    (True, False): ([0, 4, 0, 0, 0, 0], {CR: (False, False), MR: (True, False), US: (True, False)}),
    (False, True): ([0, 4, 0, 0, 0, 0], {CR: (False, True), MR: (False, False), US: (False, True)}),
    (True, True): ([0, 4, 0, 0, 0, 0], {CR: (False, True), MR: (True, False), US: (True, True)}),
    (False, False): ([0, 4, 0, 0, 0, 0], {CR: (False, True), MR: (True, False), US: (True, True)}),
}


def xf_answer(profile: Profile, abstract_syntax: str, proposed: list[str],
              role: tuple[bool, bool] | None) -> tuple[int, str, tuple[bool, bool] | None]:
    """(result, transfer syntax, role item) of dcmqrscp -xf, built from the API (see the module docstring)."""
    transfer_syntax = accepted_transfer_syntax(profile, abstract_syntax, proposed) or ""
    answer = accepted_role(profile, abstract_syntax, role)
    if profile.transfer_syntaxes(abstract_syntax) is None:
        result, item = 3, None
    elif not transfer_syntax:
        result, item = 4, None
    else:
        result, item = (0, answer.item) if answer.acceptable else (1, None)
    if abstract_syntax in SERVICES:
        preferred = next((ts for ts in DEFAULT_PREFERENCE if ts in proposed), "")
        if preferred:
            return 0, preferred, None
        return (0, transfer_syntax, item) if result == 0 else (4, "", None)
    return (3 if result == 1 else result), (transfer_syntax if result == 0 else ""), item


def test_accepted_transfer_syntax_follows_the_profile_order():
    assert accepted_transfer_syntax(INCOMING, CT, [LEI, LEE, JPEG_LOSSLESS]) == JPEG_LOSSLESS
    assert accepted_transfer_syntax(INCOMING, CT, [LEI]) is None
    assert accepted_transfer_syntax(INCOMING, PET, [LEE]) is None


def test_accepted_role():
    assert accepted_role(INCOMING, CT, (True, True)) == RoleAnswer(True, None)  # no role configured
    assert accepted_role(INCOMING, CR, None) == RoleAnswer(False, None)
    assert accepted_role(INCOMING, MR, None) == RoleAnswer(True, None)
    assert accepted_role(INCOMING, US, (False, False)) == RoleAnswer(True, (True, True))


def test_the_api_reproduces_dcmqrscp_answers():
    for (abstract_syntax, proposed), (result, transfer_syntax) in TS_PROPOSALS:
        assert xf_answer(INCOMING, abstract_syntax, proposed, None)[:2] == (result, transfer_syntax)
    for role, (results, roles) in ROLE_PROPOSALS.items():
        answers = [xf_answer(INCOMING, syntax, proposed, role) for syntax, proposed in ROLE_CONTEXTS]
        assert [answer[0] for answer in answers] == results
        assert {syntax: answer[2] for (syntax, _), answer in zip(ROLE_CONTEXTS, answers) if answer[2]} == roles


def user_items(body: bytes, user_item_type: int) -> list[bytes]:
    """The values of the user-information sub-items of one type in an A-ASSOCIATE-RQ/AC body."""
    values = []
    for item_type, value in iter_items(body, 68):
        if item_type == 0x50:
            values += [sub_value for sub_type, sub_value in iter_items(value, 0) if sub_type == user_item_type]
    return values


def iter_items(body: bytes, offset: int):
    while offset < len(body):
        item_type, length = body[offset], struct.unpack_from(">H", body, offset + 2)[0]
        yield item_type, body[offset + 4:offset + 4 + length]
        offset += 4 + length


def extended_items(body: bytes) -> dict[str, bytes]:
    items = {}
    for value in user_items(body, 0x56):
        length = struct.unpack_from(">H", value)[0]
        items[value[2:2 + length].decode()] = value[2 + length:]
    return items


def receive_pdu(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < 6 or len(data) < 6 + struct.unpack_from(">L", data, 2)[0]:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def negotiate(port: int, contexts, roles: dict[str, tuple[bool, bool]] | None = None) -> bytes:
    """Propose ``contexts`` (ids 1, 3, ...); the A-ASSOCIATE-AC's body (the association is aborted)."""
    rq = pdu.AssociateRQ(called_ae_title="QRSCP", calling_ae_title="XFTEST",
                         contexts=[pdu.PresentationContextRQ(2 * n + 1, syntax, list(proposed))
                                   for n, (syntax, proposed) in enumerate(contexts)],
                         application_context="1.2.840.10008.3.1.1.1", max_pdu_length=16384,
                         implementation_class_uid="1.2.826.0.1.3680043.8.498.3", roles=dict(roles or {}))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(pdu.encode_associate_rq(rq))
        answer = receive_pdu(sock)
        assert answer[0] == pdu.A_ASSOCIATE_AC, answer
        sock.sendall(pdu.encode_abort())
    return answer[6:]


@pytest.mark.parametrize("dcmtk_server", [pytest.param(True, marks=needs_dcmtk), False], ids=["dcmtk", "qrscp"])
def test_dcmqrscp_answers_as_pinned(tmp_path, dcmtk_server):
    (tmp_path / "area").mkdir()
    with Server(tmp_path, simple_config(), "-xf", write(tmp_path, PROFILES), "In Profile", "Out",
                dcmtk_server=dcmtk_server) as server:
        body = negotiate(server.port, [proposal for proposal, _ in TS_PROPOSALS])
        answer = pdu.decode_associate_ac(body)
        assert [(c.result, c.transfer_syntax if c.result == 0 else "") for c in answer.contexts] == \
            [expected for _, expected in TS_PROPOSALS]
        assert answer.roles == {}
        if dcmtk_server:  # qrscp does not answer extended negotiation (nothing in dcmqrscp uses it)
            assert extended_items(body) == {US: EXTENDED[US], SC: EXTENDED[SC]}  # accepted ones, not requested
        for role, (results, roles) in ROLE_PROPOSALS.items():
            answer = pdu.decode_associate_ac(negotiate(server.port, ROLE_CONTEXTS,
                                                       {syntax: role for syntax, _ in ROLE_CONTEXTS}))
            assert ([c.result for c in answer.contexts], answer.roles) == (results, roles), role


@pytest.mark.parametrize("dcmtk_server", [pytest.param(True, marks=needs_dcmtk), False], ids=["dcmtk", "qrscp"])
def test_move_sub_association_proposes_the_out_profile(tmp_path, dcmtk_server):
    """C-MOVE: dcmqrscp proposes the out-profile to the destination (here refused, so the move fails)."""
    listener = socket.create_server(("127.0.0.1", 0))
    destination_port = listener.getsockname()[1]
    requests: list[bytes] = []

    def refuse_one_association() -> None:
        connection, _ = listener.accept()
        with connection:
            requests.append(receive_pdu(connection))
            connection.sendall(pdu.encode_associate_rj(1, 1, 1))

    (tmp_path / "area").mkdir()
    config = simple_config(host_table=f"dest = (DEST, localhost, {destination_port})")
    instance = make_ct()
    write_instance(instance, tmp_path / "ct.dcm")
    thread = threading.Thread(target=refuse_one_association, daemon=True)
    thread.start()
    with listener, Server(tmp_path, config, "-xf", write(tmp_path, PROFILES), "In Profile", "Out",
                          dcmtk_server=dcmtk_server) as server:
        stored = run_dcmtk("storescu", "-aec", "QRSCP", "127.0.0.1", str(server.port), str(tmp_path / "ct.dcm"))
        assert stored.returncode == 0, stored.stderr
        run_dcmtk("movescu", "-S", "-aec", "QRSCP", "-aem", "DEST", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={instance.StudyInstanceUID}", "127.0.0.1", str(server.port))
        thread.join(10)
    body = requests[0][6:]
    rq = pdu.decode_associate_rq(body)
    assert [(c.context_id, c.abstract_syntax, c.transfer_syntaxes) for c in rq.contexts] == \
        [(2 * n + 1, syntax, syntaxes) for n, (syntax, syntaxes) in enumerate(OUTGOING.contexts)]
    role_items = [(value[2:-2].decode(), (bool(value[-2]), bool(value[-1]))) for value in user_items(body, 0x54)]
    expected_roles = [(syntax, OUTGOING.roles[syntax]) for syntax, _ in OUTGOING.contexts if syntax in OUTGOING.roles]
    if dcmtk_server:
        assert role_items == expected_roles  # one item per context: CT twice
        assert extended_items(body) == EXTENDED
    else:  # one role item per abstract syntax (PS3.8 §D.3.3.4), no extended negotiation
        assert role_items == list(dict.fromkeys(expected_roles))


def test_server_exits_1_on_a_bad_profile_file(tmp_path):
    result = run_qrscp("-xf", str(tmp_path / "missing.cfg"), "In", "Out", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.decode() == ("F: cannot read association config file: unable to open configuration "
                                      f"file: {tmp_path / 'missing.cfg'}\n")
