"""The benchmark's own DICOM objects, made with pydicom: CT-like images of about 40 kB and multi-frame
images of about 25 MB, with UIDs unique to the run.

One template file is written per kind with pydicom; every instance is that template with its identifying
values (UIDs, patient, study date, ...) written over fixed-width placeholders, so tens of thousands of
files cost seconds. All values of a kind have the same length, so no encoded length ever changes.
"""
from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MULTIFRAME_WORD_SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7.3"

#: Fixed widths of the counters in UIDs and other values (UID components get a leading 1).
_STUDY_WIDTH, _INSTANCE_WIDTH = 6, 6
FIRST_STUDY_DATE = datetime.date(2001, 1, 1)
#: The values that differ between studies (and so between the index records of two studies).
STUDY_KEYS = ("study_uid", "patient_id", "patient_name", "study_date", "study_id", "accession")


@dataclass(frozen=True)
class Kind:
    """A kind of object: SOP class, modality and image geometry."""

    name: str
    sop_class_uid: str
    modality: str
    rows: int
    columns: int
    frames: int


#: About 40 kB: 140 x 140 16-bit pixels plus the header.
SMALL_CT = Kind("ct", CT_IMAGE_STORAGE, "CT", 140, 140, 1)
#: About 1.5 kB: 16 x 16 pixels, for the C-FIND areas (up to 100,000 instances: only their index records
#: count, and Orthanc ingests them all).
FIND_CT = Kind("fd", CT_IMAGE_STORAGE, "CT", 16, 16, 1)
#: About 25 MB: 50 frames of 512 x 512 16-bit pixels.
LARGE_MULTIFRAME = Kind("mf", MULTIFRAME_WORD_SC_STORAGE, "OT", 512, 512, 50)


@dataclass(frozen=True)
class Instance:
    """One generated instance: its file and what identifies it."""

    path: Path
    study: int
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    study_date: str


class Template:
    """Bytes with fixed-width placeholder values at known offsets; :meth:`render` writes real values over
    them. Every placeholder must occur at least once, and no two occurrences may overlap."""

    def __init__(self, data: bytes, placeholders: dict[str, str]) -> None:
        self.data = data
        self.offsets: dict[str, list[int]] = {}
        taken: list[tuple[int, int]] = []
        for name, placeholder in placeholders.items():
            needle = placeholder.encode()
            self.offsets[name] = _find_all(data, needle)
            taken += [(offset, offset + len(needle)) for offset in self.offsets[name]]
        taken.sort()
        if any(end > start for (_, end), (start, _) in zip(taken, taken[1:])):
            raise ValueError("placeholders overlap in the template")
        self.lengths = {name: len(placeholder) for name, placeholder in placeholders.items()}

    def render(self, values: dict[str, str]) -> bytes:
        """The template with ``values`` (keyed like the placeholders, same lengths) written in."""
        data = bytearray(self.data)
        for name, value in values.items():
            encoded = value.encode()
            if len(encoded) != self.lengths[name]:
                raise ValueError(f"{name}: {value!r} is not {self.lengths[name]} bytes long")
            for offset in self.offsets[name]:
                data[offset:offset + len(encoded)] = encoded
        return bytes(data)


class Corpus:
    """Generates the instances of one benchmark run; the UID root is unique to the run."""

    def __init__(self, directory: Path, seed: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        generator = random.Random(seed) if seed is not None else random.SystemRandom()
        run = generator.randrange(10**17, 10**18)
        self.uid_root = f"2.25.{run}"
        self.run_tag = str(run)[-6:]
        self._last_study = 0
        self._templates: dict[str, Template] = {}

    # --- values -------------------------------------------------------------------------------------

    def study_values(self, study: int) -> dict[str, str]:
        """The values of :data:`STUDY_KEYS` for study number ``study`` (one patient per study; study
        ``n`` is dated ``n`` days after :data:`FIRST_STUDY_DATE`)."""
        number = f"{study:0{_STUDY_WIDTH}d}"
        return {
            "study_uid": f"{self.uid_root}.1{number}",
            "patient_id": f"BP{self.run_tag}{number}",
            "patient_name": f"BENCH^P{self.run_tag}{number}",
            "study_date": (FIRST_STUDY_DATE + datetime.timedelta(days=study)).strftime("%Y%m%d"),
            "study_id": f"S{number}",
            "accession": f"A{self.run_tag}{number}",
        }

    def _values(self, study: int, instance: int) -> dict[str, str]:
        values = self.study_values(study)
        values["series_uid"] = values["study_uid"] + ".11"
        values["sop_uid"] = f"{values['series_uid']}.1{instance:0{_INSTANCE_WIDTH}d}"
        values["instance_number"] = f"{instance:0{_INSTANCE_WIDTH}d}"
        return values

    @staticmethod
    def file_name(kind: Kind, study: int, instance: int) -> str:
        """The file name of an instance: fixed width, so that names of two studies differ only in the
        study number (see :func:`study_file_prefix`)."""
        return f"{study_file_prefix(kind, study)}{instance:0{_INSTANCE_WIDTH}d}.dcm"

    # --- files --------------------------------------------------------------------------------------

    def template(self, kind: Kind) -> Template:
        """The template of ``kind`` (built on first use)."""
        if kind.name not in self._templates:
            placeholders = {name: _placeholder(number, len(value))
                            for number, (name, value) in enumerate(self._values(0, 0).items())}
            self._templates[kind.name] = Template(_template_bytes(kind, placeholders), placeholders)
        return self._templates[kind.name]

    def encode(self, kind: Kind, study: int, instance: int) -> bytes:
        """The file bytes of one instance."""
        return self.template(kind).render(self._values(study, instance))

    def new_study(self) -> int:
        """A study number not used before in this run."""
        self._last_study += 1
        return self._last_study

    def write_study(self, kind: Kind, count: int, directory: Path) -> list[Instance]:
        """``count`` instances of a new study (one series) as files in ``directory``."""
        study = self.new_study()
        directory.mkdir(parents=True, exist_ok=True)
        instances = []
        for number in range(1, count + 1):
            values = self._values(study, number)
            path = directory / self.file_name(kind, study, number)
            path.write_bytes(self.encode(kind, study, number))
            instances.append(Instance(path, study, values["patient_id"], values["study_uid"],
                                      values["series_uid"], values["sop_uid"], values["study_date"]))
        return instances

    def write_studies(self, kind: Kind, studies: int, per_study: int, directory: Path) -> list[list[Instance]]:
        """``studies`` new studies of ``per_study`` instances each."""
        return [self.write_study(kind, per_study, directory) for _ in range(studies)]


def study_file_prefix(kind: Kind, study: int) -> str:
    """The part of an instance's file name that names its study."""
    return f"{kind.name}{study:0{_STUDY_WIDTH}d}_"


def _placeholder(number: int, length: int) -> str:
    """``length`` digits found nowhere else in a template: ``8`` then the digit ``number`` repeated
    (a valid value for every VR used: UI, LO, PN, SH, DA, IS)."""
    return ("8" + str(number) * length)[:length]


def _find_all(data: bytes, needle: bytes) -> list[int]:
    offsets, start = [], 0
    while (found := data.find(needle, start)) >= 0:
        offsets.append(found)
        start = found + len(needle)
    if not offsets:
        raise ValueError(f"placeholder {needle!r} not found in the template")
    return offsets


def _template_bytes(kind: Kind, placeholders: dict[str, str]) -> bytes:
    """A DICOM file of ``kind`` (Explicit VR Little Endian, with meta header) carrying the placeholders."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = kind.sop_class_uid
    ds.StudyTime = "101500"
    ds.Modality = kind.modality
    ds.Manufacturer = "qrscp bench"
    ds.ReferringPhysicianName = "BENCH^REFERRER"
    ds.StudyDescription = "qrscp benchmark study"
    ds.SeriesDescription = "qrscp benchmark series"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.SeriesNumber = 1
    ds.ImageComments = "qrscp benchmark"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if kind.frames > 1:
        ds.NumberOfFrames = kind.frames
    ds.Rows = kind.rows
    ds.Columns = kind.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if kind.sop_class_uid == CT_IMAGE_STORAGE:
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
    ds.PixelData = _pixel_bytes(kind)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = kind.sop_class_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # The placeholders are not valid dates: set them without pydicom's value validation.
    settings = pydicom_config.settings
    modes = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        ds.file_meta.MediaStorageSOPInstanceUID = placeholders["sop_uid"]
        ds.SOPInstanceUID = placeholders["sop_uid"]
        ds.StudyDate = ds.SeriesDate = placeholders["study_date"]
        ds.AccessionNumber = placeholders["accession"]
        ds.PatientName = placeholders["patient_name"]
        ds.PatientID = placeholders["patient_id"]
        ds.StudyInstanceUID = placeholders["study_uid"]
        ds.SeriesInstanceUID = placeholders["series_uid"]
        ds.StudyID = placeholders["study_id"]
        ds.InstanceNumber = placeholders["instance_number"]
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = modes
    return buffer.getvalue()


#: Keeps the low 4 bits of a byte: applied to the high byte of every pixel (12 bits stored).
_HIGH_BYTE_MASK = bytes(b & 0x0F for b in range(256))


def _pixel_bytes(kind: Kind) -> bytes:
    """Deterministic noise (not compressible) in 12 of 16 bits; no two adjacent bytes are both printable,
    so no placeholder can turn up in pixel data."""
    data = bytearray(random.Random(kind.name).randbytes(kind.rows * kind.columns * kind.frames * 2))
    data[1::2] = data[1::2].translate(_HIGH_BYTE_MASK)
    return bytes(data)
