"""Property-based fuzzing (hypothesis) of every entry point that reads outside input (robustness, item 5).

In process: the configuration parser, the command-line parser, the ``index.dat`` decoders and a
:class:`StorageArea` opened on corrupted index files, the PDU decoders, the DIMSE command decoder, the
identifier decoder and the index-value reader of stored data sets. Each may only succeed or raise its
documented error. Over the network: mutated A-ASSOCIATE-RQs and mutated P-DATA-TF PDUs (broken command
sets, PDV headers, data sets) against a real server, which must end each connection within its timeouts,
stay within its memory limit and answer a C-ECHO and a C-FIND with the stored data intact afterwards.

Default mode runs :data:`EXAMPLES` examples per target, derandomized (the same ones every run);
``pytest --long`` runs :data:`LONG_EXAMPLES`, random, for minutes. A crash found becomes an ``@example``
of its target (regression).
"""
from __future__ import annotations

import contextlib
import io
import re
import socket
from pathlib import Path
from typing import Callable, Iterator

import pytest
from conftest import Server, needs_dcmtk, simple_config
from corpus import write_instance
from health import MemoryGuard, assert_healthy, indexed_uids, store
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rawpeer import (
    AE_TITLE,
    CT_CONTEXT,
    FIND_CONTEXT,
    PEER_TIMEOUT,
    SUCCESS,
    RawPeer,
    associate_rq,
    dataset_bytes,
    identifier,
    instance,
    p_data,
    pdv,
    store_request,
)
from test_index import index_values_from_bytes

from qrscp.archive import index
from qrscp.archive.index_values import read_index_values
from qrscp.archive.storage_area import DatabaseError, StorageArea
from qrscp.cli import command_lines as options
from qrscp.cli.dcmqridx import check_area
from qrscp.config import config_file as config
from qrscp.dicom import dump as datasetdump
from qrscp.dicom import identifiers, uids
from qrscp.dicom.elements import DataSetError
from qrscp.net import dimse, pdu

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")   # pydicom on the mutated values

BRANCH = 85
EXAMPLES = 100
LONG_EXAMPLES = 5000


def run(long_run: bool, test: Callable[..., None]) -> None:
    """Run the hypothesis ``test`` with this module's settings for the suite's mode."""
    settings(max_examples=LONG_EXAMPLES if long_run else EXAMPLES, deadline=None, database=None,
             derandomize=not long_run, print_blob=True,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                    HealthCheck.filter_too_much])(test)()


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with bytes overwritten, inserted or removed, or cut, or followed by junk."""
    size = len(seed)
    overwrite = st.lists(st.tuples(st.integers(0, max(0, size - 1)), st.integers(0, 255)), min_size=1, max_size=8)

    def apply(changes: list[tuple[int, int]]) -> bytes:
        data = bytearray(seed)
        for offset, value in changes:
            data[offset] = value
        return bytes(data)

    return st.one_of(
        overwrite.map(apply),
        st.integers(0, size).map(lambda cut: seed[:cut]),
        st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=64)).map(
            lambda insert: seed[:insert[0]] + insert[1] + seed[insert[0]:]),
        st.tuples(st.integers(0, size), st.integers(1, 64)).map(
            lambda cut: seed[:cut[0]] + seed[cut[0] + cut[1]:]),
        st.binary(max_size=64).map(lambda junk: seed + junk),
    )


def _decodes_or_raises(decode: Callable[[], object], *errors: type[BaseException]) -> None:
    try:
        decode()
    except errors:
        pass


# === the configuration parser ============================================================================

_CONFIG_TOKENS = [
    "NetworkTCPPort", "MaxPDUSize", "MaxAssociations", "UserName", "GroupName", "SpecificCharacterSet",
    "HostTable", "VendorTable", "AETable", "BEGIN", "END", "ANY", "RW", "R", "W", "=", ",", "(", ")", '"', "'",
    "#", "mb", "kb", "gb", "104", "0", "-1", "4294967296", "99999999999999999999", "QRSCP", "host", "ACME",
    "(A, h, 1)", "(200, 1024mb)", "/tmp/x", "ISO_IR 100", "override", "\t", " ", "\x00", "\xff",
]
_CONFIG_LINES = st.lists(st.sampled_from(_CONFIG_TOKENS), max_size=12).map(" ".join)
_CONFIG_TEXT = st.one_of(
    st.lists(_CONFIG_LINES, max_size=30).map(lambda lines: "\n".join(lines).encode("latin-1")),
    st.binary(max_size=2000),
    st.lists(_CONFIG_LINES, max_size=5).map(lambda lines: ("x" * 600 + "\n".join(lines)).encode("latin-1")),
)
_VALID_CONFIG = simple_config({"QRSCP": "area RW (200, 1024mb) ANY", "OTHER": "b R (5, 10mb) peers"},
                              host_table="peers = (A, host, 104), (B, other, 105)",
                              vendor_table='"Acme" = peers').replace("{port}", "104").encode()


def test_config_parser(long_run: bool) -> None:
    """``config.parse`` never raises: every input gives a configuration and a list of errors."""
    @given(st.one_of(_CONFIG_TEXT, mutated(_VALID_CONFIG)))
    @example(_VALID_CONFIG)
    def check(data: bytes) -> None:
        parsed, errors = config.parse(data, "fuzz.cfg")
        assert isinstance(errors, list) and all(isinstance(e, str) for e in errors)
        if not errors:
            for entry in parsed.ae_table:
                parsed.peer_in_ae_title(entry.ae_title, "A", "host")
                parsed.peer_for_ae_title("A")
                parsed.same_vendor("A", entry.ae_title)

    run(long_run, check)


# === the command-line parser =============================================================================

_OPTION_NAMES = sorted({name for name in re.findall(r"(?<![\w-])([+-]{1,2}[A-Za-z][\w=-]*)",
                                                    options.dcmqrscp_command_line().option_help())
                        if name not in ("--arguments",)})   # --arguments reconfigures this process's logging
#: Real arguments cannot hold a NUL byte (execve), nor surrogates other than the escapes of undecodable
#: bytes (U+DC80-U+DCFF, sampled below).
_ARGUMENT_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_ARGUMENTS = st.lists(st.one_of(st.sampled_from(_OPTION_NAMES),
                                st.sampled_from(["104", "0", "-1", "65536", "x", "", "@", "@/nonexistent", "@/",
                                                 "\udcff", "@\udcff"]),
                                _ARGUMENT_TEXT, _ARGUMENT_TEXT.map(lambda text: "@" + text)), max_size=10)


def test_command_line_parser(long_run: bool) -> None:
    """``options.parse_args`` returns options or exits with DCMTK's codes (0 after help/version, 1 for a
    bad command line); it raises nothing else."""
    assert len(_OPTION_NAMES) > 100

    @given(_ARGUMENTS)
    @example(["-c", "/nonexistent.cfg", "+xs", "--fork", "-s", "104"])
    def check(argv: list[str]) -> None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                parsed = options.parse_args(argv)
            except SystemExit as exit_:
                assert exit_.code in (0, 1), exit_.code
                return
        assert isinstance(parsed, options.Options)

    run(long_run, check)


def test_command_file_name_with_nul_byte() -> None:
    """Found by :func:`test_command_line_parser` (``--long``): ``@`` followed by a NUL byte is a command
    file that cannot be opened (exit 1), not a ValueError."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        with pytest.raises(SystemExit) as exit_:
            options.parse_args(["@\x00"])
    assert exit_.value.code == 1


# === the index reader ==================================================================================

@pytest.fixture(scope="module")
def valid_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A directory with three registered instances (two studies); the bytes of its index.dat."""
    directory = tmp_path_factory.mktemp("fuzz-index")
    with StorageArea(str(directory), 500, -1) as area:
        for study, number in ((1, 1), (1, 2), (2, 1)):
            path = write_instance(instance(BRANCH, study, number), directory / f"i{study}-{number}.dcm")
            values = read_index_values(str(path))
            area.register(str(path), values.sop_class_uid, values)
    return directory, (directory / index.FILE_NAME).read_bytes()


def _field_offsets() -> list[int]:
    """Offsets of interesting bytes: header, first descriptor, each record's fields and params."""
    offsets = list(range(index.HEADER_SIZE)) + list(range(index.DESCRIPTORS_OFFSET, index.DESCRIPTORS_OFFSET + 88))
    for slot in range(3):
        base = index.record_offset(slot)
        offsets += [base + f.offset for f in (index.FILENAME, index.SOP_CLASS_UID, index.RECORDED_DATE,
                                             index.IMAGE_SIZE)]
        offsets += [base + p.offset + k for p in index.PARAMS for k in (0, 8, 12)]
        offsets += [base + p.field.offset for p in index.PARAMS]
    return offsets


_FIELD_OFFSETS = _field_offsets()


def corrupted_index(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` with its structure hit: fields overwritten, records cut, junk appended."""
    hits = st.lists(st.tuples(st.sampled_from(_FIELD_OFFSETS), st.binary(min_size=1, max_size=8)), min_size=1,
                    max_size=6)

    def hit(changes: list[tuple[int, bytes]]) -> bytes:
        data = bytearray(valid)
        for offset, value in changes:
            data[offset:offset + len(value)] = value
        return bytes(data)

    return st.one_of(hits.map(hit), mutated(valid),
                     st.integers(0, len(valid) + index.RECORD_SIZE).map(lambda n: (valid * 2)[:n]))


def test_index_files(long_run: bool, valid_index: tuple[Path, bytes], tmp_path_factory: pytest.TempPathFactory
                     ) -> None:
    """A storage area whose ``index.dat`` is corrupted opens, reads, checks and registers, or raises
    :class:`DatabaseError`; nothing else."""
    directory, valid = valid_index
    files = sorted(str(p) for p in directory.glob("*.dcm"))
    fields = [p.tag for p in index.PARAMS] + ["filename", "sop_class_uid", "charset", "instance_description", "slot"]
    work = tmp_path_factory.mktemp("fuzz-area")
    newcomer = read_index_values(files[0])

    @given(corrupted_index(valid))
    @example(valid)
    def check(data: bytes) -> None:
        (work / index.FILE_NAME).write_bytes(data)
        try:
            with StorageArea(str(work), 500, -1, create_directory=False) as area:
                area.read_columns(fields)
                area.read_snapshot()
                check_area(area)
                area.register(files[0], newcomer.sop_class_uid, newcomer)
                area.read_columns(fields)
        except DatabaseError:
            pass

    run(long_run, check)


def test_index_record_decoders(long_run: bool, valid_index: tuple[Path, bytes]) -> None:
    """The record and descriptor decoders take any bytes of their size; the header check raises nothing
    but :class:`index.IndexFormatError`."""
    record = valid_index[1][index.record_offset(0):index.record_offset(1)]
    patches = st.lists(st.tuples(st.integers(0, index.RECORD_SIZE - 1), st.binary(min_size=1, max_size=16)),
                       max_size=8)

    def patched(base: bytes, changes: list[tuple[int, bytes]]) -> bytes:
        data = bytearray(base)
        for offset, value in changes:
            data[offset:offset + len(value)] = value
        return bytes(data[:len(base)])

    @given(patches, st.binary(max_size=300), st.integers(0, index.DESCRIPTORS_SIZE), st.binary(max_size=12))
    def check(changes: list[tuple[int, bytes]], block: bytes, block_size: int, header: bytes) -> None:
        decoded = index.decode_record(patched(record, changes))
        assert len(decoded.params) == index.PARAM_COUNT
        assert len(index.decode_descriptors((block * (block_size // max(1, len(block)) + 1))[:block_size])) \
            == index.MAX_STUDIES
        _decodes_or_raises(lambda: index.check_header(header, "index.dat"), index.IndexFormatError)

    run(long_run, check)


# === PDUs, command sets, identifiers, data sets ========================================================

_RQ = pdu.encode_associate_rq(associate_rq(contexts={1: uids.VERIFICATION, 3: uids.STUDY_ROOT_FIND}))
_RQ_ROLES = associate_rq()
_RQ_ROLES.roles = {"1.2.840.10008.5.1.4.1.1.2": (True, True)}
_AC = pdu.encode_associate_ac(pdu.AssociateAC(
    "QRSCP", "RAWSCU", [pdu.PresentationContextAC(1, 0, uids.EXPLICIT_VR_LE)], uids.APPLICATION_CONTEXT, 16384,
    "1.2.3", "X", {uids.VERIFICATION: (True, False)}))
_COMMAND = dimse.encode_command({**store_request(instance(BRANCH, 3, 1)), "MoveOriginatorApplicationEntityTitle": "AE",
                                 "MoveOriginatorMessageID": 3, "CommandDataSetType": dimse.DATASET_PRESENT})


def test_pdu_decoders(long_run: bool) -> None:
    """The PDU decoders raise nothing but :class:`pdu.PDUError`."""
    @given(st.one_of(mutated(_RQ[6:]), mutated(pdu.encode_associate_rq(_RQ_ROLES)[6:]), mutated(_AC[6:]),
                     st.binary(max_size=300)))
    @example(_RQ[6:])
    def check(body: bytes) -> None:
        for decode in (pdu.decode_associate_rq, pdu.decode_associate_ac, pdu.decode_associate_rj,
                       lambda data: list(pdu.decode_p_data(data)),
                       lambda data: list(pdu.decode_p_data(memoryview(data)))):
            _decodes_or_raises(lambda: decode(body), pdu.PDUError)
        pdu.decode_header(body[:6].ljust(6, b"\0"))

    run(long_run, check)


def test_command_decoder(long_run: bool) -> None:
    """``dimse.decode_command`` raises nothing but :class:`dimse.DIMSEError`; what it decodes encodes again."""
    @given(st.one_of(mutated(_COMMAND), mutated(_COMMAND[12:]), st.binary(max_size=200)))
    @example(_COMMAND)
    def check(data: bytes) -> None:
        try:
            command = dimse.decode_command(data)
        except dimse.DIMSEError:
            return
        dimse.dump(command, incoming=True)
        try:
            dimse.encode_command(command)
        except UnicodeEncodeError:   # a replacement character from a non-ASCII value
            pass

    run(long_run, check)


_IDENTIFIER = identifier(QueryRetrieveLevel="STUDY", PatientName="A*", StudyInstanceUID="", StudyDate="2020-",
                         ModalitiesInStudy="CT")
_SYNTAXES = st.sampled_from([uids.EXPLICIT_VR_LE, uids.IMPLICIT_VR_LE, uids.EXPLICIT_VR_BE,
                             uids.DEFLATED_EXPLICIT_VR_LE])


def test_identifier_decoder(long_run: bool) -> None:
    """``identifiers.decode_identifier`` raises nothing but ValueError, in any transfer syntax; what it
    accepts, ``datasetdump.dump`` prints."""
    @given(st.one_of(mutated(_IDENTIFIER), st.binary(max_size=300)), _SYNTAXES)
    @example(_IDENTIFIER, uids.EXPLICIT_VR_LE)
    def check(data: bytes, transfer_syntax: str) -> None:
        try:
            identifiers.decode_identifier(data, transfer_syntax)
        except ValueError:
            return
        datasetdump.dump(data, transfer_syntax)

    run(long_run, check)


_DATA_SET = dataset_bytes(instance(BRANCH, 4, 1))


def test_index_value_reader(long_run: bool) -> None:
    """The reader of stored data sets (run on every received C-STORE) raises nothing but
    :class:`DataSetError`, whatever the nesting."""
    @given(st.one_of(mutated(_DATA_SET), st.binary(max_size=300)), st.one_of(st.none(), _SYNTAXES))
    @example(_DATA_SET, uids.EXPLICIT_VR_LE)
    def check(data: bytes, transfer_syntax: str | None) -> None:
        _decodes_or_raises(lambda: index_values_from_bytes(data, transfer_syntax), DataSetError)

    run(long_run, check)


# === over the network ==================================================================================

@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path, list[str]]]:
    root = tmp_path_factory.mktemp("fuzz-net")
    area = root / "area"
    with Server(root, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}), "-ta", str(PEER_TIMEOUT),
                "-td", str(PEER_TIMEOUT)) as server:
        seeds = [instance(BRANCH, 5, n) for n in (1, 2)]
        assert store(server.port, seeds) == [SUCCESS, SUCCESS]
        yield server, area, [str(d.SOPInstanceUID) for d in seeds]


def _exchange(port: int, opening: bytes, then: bytes = b"") -> list[int]:
    """Send ``opening`` (and ``then`` after the server's first answer, if it accepted), half-close, and
    read until the server closes; the PDU types it sent. Fails if it keeps the connection open."""
    with RawPeer(port, timeout=PEER_TIMEOUT + 5) as peer:
        peer.send(opening)
        received = []
        if then:
            answer = peer.read_pdu()
            if answer is None:
                return received
            received.append(answer[0])
            if answer[0] == pdu.A_ASSOCIATE_AC:
                peer.send(then)
        try:
            peer.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return received + peer.ending()


_PDU_TYPES = {pdu.A_ASSOCIATE_AC, pdu.A_ASSOCIATE_RJ, pdu.P_DATA_TF, pdu.A_RELEASE_RP, pdu.A_ABORT}
_FULL_RQ = pdu.encode_associate_rq(associate_rq())
_ECHO = dimse.encode_command({"CommandField": dimse.C_ECHO_RQ, "MessageID": 7, "AffectedSOPClassUID": uids.VERIFICATION,
                              "CommandDataSetType": dimse.NO_DATASET})
_FIND = dimse.encode_command({"CommandField": dimse.C_FIND_RQ, "MessageID": 8, "Priority": 0,
                              "AffectedSOPClassUID": uids.STUDY_ROOT_FIND, "CommandDataSetType": dimse.DATASET_PRESENT})
_STORE_DATASET = dataset_bytes(instance(BRANCH, 6, 1, PixelData=None))
_STORE = dimse.encode_command({**store_request(instance(BRANCH, 6, 1)), "CommandDataSetType": dimse.DATASET_PRESENT})
_STORE_UID = str(instance(BRANCH, 6, 1).SOPInstanceUID)
#: Well-formed DIMSE traffic on :func:`associate_rq`'s contexts, to be mutated.
_DIMSE_SEEDS = [
    p_data(pdv(1, 0x03, _ECHO)),
    p_data(pdv(FIND_CONTEXT, 0x03, _FIND)) + p_data(pdv(FIND_CONTEXT, 0x02, _IDENTIFIER)),
    p_data(pdv(CT_CONTEXT, 0x03, _STORE), pdv(CT_CONTEXT, 0x02, _STORE_DATASET)),
]


@needs_dcmtk
def test_fuzzed_association_requests(long_run: bool, target: tuple[Server, Path, list[str]]) -> None:
    """Mutated A-ASSOCIATE-RQs: the server answers with valid PDU types only, ends every connection
    within its timeouts, stays bounded, and serves the stored data afterwards."""
    server, area, expected = target

    @given(st.one_of(mutated(_FULL_RQ), mutated(_RQ), st.binary(max_size=200)))
    @example(_FULL_RQ)
    def check(opening: bytes) -> None:
        assert set(_exchange(server.port, opening)) <= _PDU_TYPES

    with MemoryGuard(server) as guard:
        run(long_run, check)
    guard.assert_bounded()
    assert_healthy(server, area, expected)


@needs_dcmtk
def test_fuzzed_dimse_traffic(long_run: bool, target: tuple[Server, Path, list[str]]) -> None:
    """Mutated P-DATA-TF traffic (command sets, PDV headers, identifiers, data sets) on an accepted
    association, followed by a C-ECHO and a release: valid PDU types only, every connection ended, the
    server bounded and serving the stored data afterwards (a mutated store that succeeds adds its
    instance)."""
    server, area, expected = target
    rq = _FULL_RQ
    follow_up = p_data(pdv(1, 0x03, _ECHO)) + pdu.RELEASE_RQ

    @given(st.sampled_from(range(len(_DIMSE_SEEDS))).flatmap(lambda n: mutated(_DIMSE_SEEDS[n])))
    @example(_DIMSE_SEEDS[0])
    def check(traffic: bytes) -> None:
        assert set(_exchange(server.port, rq, traffic + follow_up)) <= _PDU_TYPES

    with MemoryGuard(server) as guard:
        run(long_run, check)
    guard.assert_bounded()
    stored = set(indexed_uids(area))
    assert set(expected) <= stored <= {*expected, _STORE_UID}   # a mutated C-STORE may have gone through
    assert_healthy(server, area, stored)
