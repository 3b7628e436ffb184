"""The ``dcmqridx`` program (docs/dcmqridx.md): register DICOM files in a storage area's index, print the index.

Files are registered where they are (no copy), with their path as given, the area's limits at their
maximum (500 studies, 1 GiB per study) and file deletion disabled: a duplicate or a quota eviction only
drops index records. ``-p`` prints the index exactly as DCMTK's ``dcmqridx -p`` does.

Two additions: ``--check`` verifies an area (header, study descriptors against the records, every
record's file present and holding the instance the record names, every ``.dcm`` file in the area's
directory indexed; exit code 2 when something is wrong) and ``--repair`` drops the records that fail
those checks (and older records of an instance indexed twice), rebuilds the study descriptors and keeps
the old index as ``index.dat.bak``; it never deletes a file.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Sequence

from qrscp import log
from qrscp.archive import index
from qrscp.archive.index_values import read_index_values
from qrscp.archive.storage_area import DatabaseError, Snapshot, StorageArea
from qrscp.dicom.elements import DataSetError

LOG = log.get_logger(log.APP_DCMQRIDX)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PROBLEMS = 2
BACKUP_SUFFIX = ".bak"
#: Progress is shown for at least this many files.
PROGRESS_MINIMUM = 100
#: Seconds between two renderings of the progress on a terminal, and at most between two progress lines.
_PROGRESS_INTERVAL = 0.2
_PROGRESS_LINE_INTERVAL = 10.0


def main(argv: list[str] | None = None) -> int:
    """The ``dcmqridx`` console script."""
    from qrscp.cli.command_lines import parse_dcmqridx_args

    options = parse_dcmqridx_args(sys.argv[1:] if argv is None else argv)
    log.configure(options.log_level, options.log_config, appname="dcmqridx")
    return run(options.index_out, options.files, print_index=options.print_index, not_new=options.not_new,
               check=options.check, repair=options.repair)


def run(index_out: str, files: Sequence[str], *, print_index: bool = False, not_new: bool = False,
        check: bool = False, repair: bool = False) -> int:
    """Register ``files`` in the area ``index_out``, then repair, check and print it (on stdout) as asked;
    the exit code."""
    out = sys.stdout.buffer
    try:
        area = StorageArea(index_out, index.MAX_STUDIES, index.MAX_BYTES_PER_STUDY, delete_files=False,
                           create_directory=False)
    except DatabaseError:
        return EXIT_ERROR  # the reason is logged
    status = EXIT_OK
    with area:
        register_files(area, files, not_new=not_new)
        if repair:
            repair_area(area, out)
        if check:
            problems = check_area(area)
            out.write(b"".join(os.fsencode(p) + b"\n" for p in problems))
            out.write(b"index consistent\n" if not problems else b"%d problem(s) found\n" % len(problems))
            status = EXIT_PROBLEMS if problems else EXIT_OK
        if print_index:
            out.write(format_index(area.read_snapshot()))
        out.flush()
    return status


def register_files(area: StorageArea, files: Sequence[str], *, not_new: bool = False) -> None:
    """Register each file as the reference's ``dcmqridx`` does, logging what fails."""
    progress = _Progress(len(files))
    for filename in files:
        progress.advance(_register_file(area, filename, not_new))
    progress.done()


def _register_file(area: StorageArea, filename: str, not_new: bool) -> bool:
    """Register one file, logging what fails; whether it was registered."""
    if not os.access(filename, os.R_OK):
        LOG.error("cannot access: %s", filename)
        return False
    LOG.info("registering: %s", filename)
    try:
        values = read_index_values(filename)
    except (DataSetError, OSError):
        values = None
    if values is None or not values.sop_class_uid or not values.sop_instance_uid:
        LOG.error("cannot load dicom file: %s", filename)
        return False
    try:
        area.register(filename, values.sop_class_uid, values, is_new=not not_new)
    except DatabaseError as error:
        LOG.error("cannot register: %s: %s", filename, error)
        return False
    return True


class _Progress:
    """The progress of registering many files (docs/dcmqridx.md §1.2): at ``-v``, a line after every
    tenth of the files (and at least every 10 s) and a last line with the rate; below ``-v`` on a
    terminal, ``registering: n/total`` rewritten in place, then the last line. Nothing otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = self._line_at = time.monotonic()
        many = total >= PROGRESS_MINIMUM
        self.lines = many and LOG.isEnabledFor(log.LEVELS["info"])
        self.terminal = many and not self.lines and sys.stderr.isatty()
        self.processed = self.registered = 0
        self._step = -(-total // 10)
        self._shown = 0.0

    def _rate(self, now: float) -> str:
        return f"{self.processed / max(now - self.started, 1e-6):,.0f} files/s"

    def advance(self, registered: bool) -> None:
        """One more file processed (and ``registered`` or not)."""
        self.processed += 1
        self.registered += registered
        if not (self.lines or self.terminal):
            return
        now = time.monotonic()
        if self.lines and (self.processed % self._step == 0 or now - self._line_at >= _PROGRESS_LINE_INTERVAL) \
                and self.processed < self.total:
            self._line_at = now
            LOG.info("%d of %d files processed, %s", self.processed, self.total, self._rate(now))
        if self.terminal and now - self._shown >= _PROGRESS_INTERVAL:
            self._shown = now
            sys.stderr.write(f"\rregistering: {self.processed}/{self.total}, {self._rate(now)}")
            sys.stderr.flush()

    def done(self) -> None:
        now = time.monotonic()
        summary = (f"registered {self.registered} of {self.total} files in {now - self.started:.1f} s "
                   f"({self._rate(now)})")
        if self.lines:
            LOG.info("%s", summary)
        elif self.terminal:
            sys.stderr.write(f"\r\x1b[K{summary}\n")
            sys.stderr.flush()


# --- printing ----------------------------------------------------------------------------------------

def _number(value: float) -> bytes:
    """A double as C++ streams print it by default (6 significant digits, like ``%g``)."""
    return b"%g" % value


def format_index(snapshot: Snapshot) -> bytes:
    """The index as DCMTK's ``dcmqridx -p`` prints it."""
    lines = [b"-- DB Index File --"]
    for number, descriptor in enumerate(snapshot.descriptors):
        if descriptor.image_count:
            lines += [b"*" * 54, b"STUDY DESCRIPTOR: %d" % number,
                      b"  Study UID: " + descriptor.study_instance_uid,
                      b"  StudySize: %d" % descriptor.study_size,
                      b"  LastRecDate: " + _number(descriptor.last_recorded_date),
                      b"  NumOfImages: %d" % descriptor.image_count]
    for slot, record in snapshot.records:
        lines += [b"*" * 55, b"RECORD NUMBER: %d" % slot,
                  b"  Status: is new" if record.hstat == index.OBJECT_IS_NEW else b"  Status: is NOT new",
                  b"  Filename: " + record.filename,
                  b"  ImageSize: %d" % record.image_size,
                  b"  RecordedDate: " + _number(record.recorded_date)]
        lines += [b'    %s: "%s"' % (param.keyword.encode(), value)
                  for param, value in zip(index.PARAMS, record.params)]
        lines.append(b'  InstanceDescription: "%s"' % record.instance_description)
    lines += [b"*" * 55, b"RECORDS IN THIS INDEXFILE: %d" % snapshot.slot_count]
    return b"\n".join(lines) + b"\n"


# --- checking and repairing --------------------------------------------------------------------------

@dataclass
class _StudyTotals:
    count: int = 0
    size: int = 0
    slots: list[int] = field(default_factory=list)


def _record_problems(snapshot: Snapshot) -> dict[int, str]:
    """Records that do not name a readable file holding their instance, and older records of an
    instance indexed more than once: slot -> what is wrong."""
    problems: dict[int, str] = {}
    newest: dict[bytes, tuple[float, int]] = {}
    for slot, record in snapshot.records:
        name = os.fsdecode(record.filename)
        try:
            values = read_index_values(name)
        except OSError as error:
            problems[slot] = f"record {slot}: cannot read {name}: {error.strerror}"
            continue
        except DataSetError as error:
            problems[slot] = f"record {slot}: {name} is not a readable DICOM file: {error}"
            continue
        for what, tag, stored in (("SOP Instance UID", index.SOP_INSTANCE_UID, record.sop_instance_uid),
                                  ("Study Instance UID", index.STUDY_INSTANCE_UID, record.study_instance_uid)):
            actual = index.stored_value(tag.field, values.values[tag.tag])
            if actual != stored:
                problems[slot] = (f"record {slot}: {name} has {what} {actual.decode('latin-1')}, "
                                  f"the index says {stored.decode('latin-1')}")
                break
        else:
            previous = newest.get(record.sop_instance_uid)
            current = (record.recorded_date, slot)
            if previous is not None:
                older = min(previous, current)[1]
                problems[older] = (f"record {older}: SOP Instance UID {record.sop_instance_uid.decode('latin-1')} "
                                   f"is indexed again in record {max(previous, current)[1]}")
            newest[record.sop_instance_uid] = max(previous or current, current)
    return problems


def _descriptor_problems(snapshot: Snapshot) -> list[str]:
    """Differences between the study descriptors and the records."""
    totals: dict[bytes, _StudyTotals] = {}
    for slot, record in snapshot.records:
        study = totals.setdefault(record.study_instance_uid, _StudyTotals())
        study.count += 1
        study.size += record.image_size
        study.slots.append(slot)
    problems = []
    described: set[bytes] = set()
    for number, descriptor in enumerate(snapshot.descriptors):
        if not descriptor.in_use:
            continue
        uid = descriptor.study_instance_uid
        text = uid.decode("latin-1")
        if uid in described:
            problems.append(f"study descriptor {number}: study {text} has another descriptor")
            continue
        described.add(uid)
        study = totals.get(uid, _StudyTotals())
        if (study.count, study.size) != (descriptor.image_count, descriptor.study_size):
            problems.append(f"study descriptor {number}: study {text}: {descriptor.image_count} images, "
                            f"{descriptor.study_size} bytes; the records have {study.count} images, "
                            f"{study.size} bytes")
    for uid, study in totals.items():
        if uid not in described:
            problems.append(f"study {uid.decode('latin-1')} ({study.count} records, e.g. record "
                            f"{study.slots[0]}) has no study descriptor")
    return problems


def _unindexed_files(area: StorageArea, snapshot: Snapshot) -> list[str]:
    """The ``.dcm`` files in the area's directory that no record names: left by a store that was killed
    before it finished, or whose record was lost (DCMTK's parallel stores lose some)."""
    indexed = {os.path.realpath(os.fsdecode(record.filename)) for _, record in snapshot.records}
    with os.scandir(area.directory) as entries:
        unindexed = sorted(entry.path for entry in entries
                           if entry.name.endswith(".dcm") and entry.is_file(follow_symlinks=False)
                           and os.path.realpath(entry.path) not in indexed)
    return [f"{path}: in the area but not in the index (an interrupted store or a lost record; "
            f"dcmqridx registers it if it is complete)" for path in unindexed]


def check_area(area: StorageArea) -> list[str]:
    """What is wrong with the area (the header was checked when it was opened); empty if nothing."""
    snapshot = area.read_snapshot()
    problems = []
    if snapshot.partial_bytes:
        problems.append(f"{area.index_path}: incomplete record of {snapshot.partial_bytes} bytes at the end")
    records = _record_problems(snapshot)
    problems += [records[slot] for slot in sorted(records)]
    problems += _descriptor_problems(snapshot)
    problems += _unindexed_files(area, snapshot)
    return problems


def repair_area(area: StorageArea, out: BinaryIO) -> int:
    """Drop the records :func:`check_area` objects to, rebuild the study descriptors, keep the old index
    as ``index.dat.bak``; the number of records dropped."""
    snapshot = area.read_snapshot()
    problems = _record_problems(snapshot)
    filenames = dict(snapshot.records)
    backup = area.index_path + BACKUP_SUFFIX
    freed = area.repair({slot: filenames[slot].filename for slot in problems}, backup)
    for slot in sorted(problems):
        out.write(os.fsencode(f"dropped {problems[slot]}\n"))
    out.write(os.fsencode(f"{freed} record(s) dropped, study descriptors rebuilt, old index kept as {backup}\n"))
    return freed


if __name__ == "__main__":
    sys.exit(main())
