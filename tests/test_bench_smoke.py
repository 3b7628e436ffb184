"""scripts/bench: the smoke run completes and prints every row; its fast prefill equals dcmqridx's index.

No timing is asserted anywhere: the benchmark's numbers depend on the machine.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HAVE_DCMTK, ROOT, dcmtk, dcmtk_env, needs_dcmtk

SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

from benchlib.corpus import SMALL_CT, Corpus  # noqa: E402
from benchlib.prefill import (  # noqa: E402
    INDEX_HEADER_SIZE,
    RECORD_SIZE,
    RECORDS_OFFSET,
    STUDY_DESCRIPTOR_SIZE,
    STUDY_DESCRIPTORS,
    build_index,
)
from benchlib.scenarios import MODES, make_machine_rows, make_rows  # noqa: E402

#: Bytes of an index.dat that legitimately differ between two builds (docs/index-format.md §3, §5): each study
#: descriptor's LastRecordedDate, each record's RecordedDate and the 38 in-memory pointers DCMTK writes
#: into every record's params (8 bytes at the start of each 16-byte param).
DESCRIPTOR_DATE = (72, 80)
RECORD_DATE = (328, 336)
PARAMS_OFFSET, PARAM_SIZE, PARAM_COUNT = 344, 16, 38


def test_smoke_run_prints_every_row(tmp_path: Path) -> None:
    servers = "qrscp,dcmtk" if HAVE_DCMTK else "qrscp"
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench"), "--smoke", "--servers", servers,
                             "--output-dir", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [row.label for row in make_rows(MODES["smoke"]).values()]
    machine_rows = [row.label for row in make_machine_rows().values()]
    for label in rows + machine_rows:
        assert label in result.stdout, f"row missing: {label}\n{result.stdout}"
    header = next(line for line in result.stdout.splitlines() if line.startswith("figure"))
    for server in servers.split(","):
        assert server in header
    written = sorted((tmp_path / "results").iterdir())
    assert [path.suffix for path in written] == [".json", ".txt"]
    report = json.loads(written[0].read_text())
    assert [row["label"] for row in report["rows"]] == rows
    assert [row["label"] for row in report["machine"]] == machine_rows
    assert report["environment"]["servers"] == servers.split(",")
    assert written[1].read_text() in result.stdout + "\n"
    tls_rows = [row for row in report["rows"] if row["key"].startswith("tls:")]
    assert len(tls_rows) == 4
    assert shutil.which("openssl"), "scripts/test installs openssl: the TLS rows need it"
    for row in tls_rows:   # qrscp measured over TLS; DCMTK 3.6.7's dcmqrscp has none: no figure, a note why
        assert row["values"].get("qrscp") and not row["errors"].get("qrscp"), row
        if HAVE_DCMTK:
            assert "dcmtk" not in row["values"] and "has no TLS" in row["notes"]["dcmtk"][0], row


def test_unknown_server_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench"), "--smoke", "--servers", "pacs"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown pacs" in result.stderr


@needs_dcmtk
@pytest.mark.dcmtk
def test_prefilled_index_equals_dcmqridx(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path / "corpus", seed=7)
    studies = corpus.write_studies(SMALL_CT, 3, 4, tmp_path / "corpus" / "find")
    built = tmp_path / "built.dat"
    build_index(corpus, SMALL_CT, studies, tmp_path, built)
    reference = tmp_path / "reference"
    reference.mkdir()
    result = subprocess.run([dcmtk("dcmqridx"), str(reference), *(str(i.path) for s in studies for i in s)],
                            env=dcmtk_env(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert _comparable(built.read_bytes()) == _comparable((reference / "index.dat").read_bytes())


def _comparable(index: bytes) -> bytes:
    """``index`` with the bytes that differ between any two builds zeroed."""
    data = bytearray(index)
    assert len(data) > RECORDS_OFFSET and (len(data) - RECORDS_OFFSET) % RECORD_SIZE == 0
    for number in range(STUDY_DESCRIPTORS):
        start = INDEX_HEADER_SIZE + number * STUDY_DESCRIPTOR_SIZE
        data[start + DESCRIPTOR_DATE[0]:start + DESCRIPTOR_DATE[1]] = bytes(8)
    for start in range(RECORDS_OFFSET, len(data), RECORD_SIZE):
        data[start + RECORD_DATE[0]:start + RECORD_DATE[1]] = bytes(8)
        for param in range(PARAM_COUNT):
            pointer = start + PARAMS_OFFSET + param * PARAM_SIZE
            data[pointer:pointer + 8] = bytes(8)
    return bytes(data)
