"""A small, deterministic DICOM corpus for the tests and the benchmark, and helpers to build single instances.

Everything is fixed: UIDs live under ``UID_ROOT``, values come from the tables below, pixel data is a tiny
computed pattern. ``write_corpus(directory)`` always writes the same files (same names, same bytes).

Single instances for other tests: ``make_ct(PatientID="X")``, ``make_mr(...)``, ``make_sr(...)`` ... take
DICOM keywords as overrides (``None`` deletes the attribute) and a ``transfer_syntax``; ``write_instance``
saves one as a DICOM file.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import config
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    ComprehensiveSRStorage,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    ImplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

UID_ROOT = "1.2.826.0.1.3680043.8.498.90210"
"""Every UID of the corpus and of ``make_*`` starts with this root (fixed: no randomness anywhere)."""

LATIN1 = "ISO_IR 100"
UTF8 = "ISO_IR 192"

# SOP class -> (Modality, has pixel data, bits allocated, samples per pixel)
_IMAGE_KINDS: dict[str, tuple[str, bool, int, int]] = {
    CTImageStorage: ("CT", True, 16, 1),
    MRImageStorage: ("MR", True, 16, 1),
    ComputedRadiographyImageStorage: ("CR", True, 16, 1),
    UltrasoundImageStorage: ("US", True, 8, 3),
    SecondaryCaptureImageStorage: ("OT", True, 8, 1),
    BasicTextSRStorage: ("SR", False, 0, 0),
    ComprehensiveSRStorage: ("SR", False, 0, 0),
    GrayscaleSoftcopyPresentationStateStorage: ("PR", False, 0, 0),
}

_ROWS = _COLUMNS = 4


def uid(*parts: int) -> str:
    """A UID under ``UID_ROOT``: ``uid(1, 2)`` -> ``<root>.1.2``."""
    return ".".join([UID_ROOT, *map(str, parts)])


def _pixel_data(bits_allocated: int, samples: int, seed: int, little_endian: bool) -> bytes:
    """A tiny deterministic image in the byte order of the transfer syntax."""
    count = _ROWS * _COLUMNS * samples
    values = [(seed * 31 + i * 7) % (1 << min(bits_allocated, 12)) for i in range(count)]
    if bits_allocated == 8:
        return bytes(values)
    return struct.pack(("<" if little_endian else ">") + f"{count}H", *values)


def make_instance(sop_class_uid: str, transfer_syntax: str = ExplicitVRLittleEndian,
                  **attributes: object) -> FileDataset:
    """One instance of ``sop_class_uid``: sensible defaults, overridden by ``attributes`` (DICOM keywords).

    An attribute given as ``None`` is left out. Image SOP classes get a 4x4 pixel matrix in the byte order
    of ``transfer_syntax``; SR and presentation states get the few attributes that identify them.
    """
    modality, has_pixels, bits_allocated, samples = _IMAGE_KINDS.get(sop_class_uid, ("OT", False, 0, 0))
    instance_uid = str(attributes.get("SOPInstanceUID") or uid(0, 0, 0, 1))
    defaults: dict[str, object] = {
        "SOPClassUID": sop_class_uid,
        "SOPInstanceUID": instance_uid,
        "StudyDate": "20200101",
        "StudyTime": "120000",
        "AccessionNumber": "",
        "Modality": modality,
        "ReferringPhysicianName": "",
        "PatientName": "Test^Patient",
        "PatientID": "TEST001",
        "PatientBirthDate": "19700101",
        "PatientSex": "O",
        "StudyInstanceUID": uid(0, 0),
        "SeriesInstanceUID": uid(0, 0, 0),
        "StudyID": "1",
        "SeriesNumber": "1",
        "InstanceNumber": "1",
    }
    if sop_class_uid in (BasicTextSRStorage, ComprehensiveSRStorage):
        defaults.update(ValueType="CONTAINER", CompletionFlag="COMPLETE", VerificationFlag="UNVERIFIED",
                        ContentDate="20200101", ContentTime="120000")
    elif sop_class_uid == GrayscaleSoftcopyPresentationStateStorage:
        defaults.update(ContentLabel="ANNOTATION", ContentDescription="Key images",
                        PresentationCreationDate="20200101", PresentationCreationTime="120000")
    values = {**defaults, **attributes}

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = uid(999)
    meta.ImplementationVersionName = "QRSCP_TESTS"
    syntax = meta.TransferSyntaxUID
    dataset = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128, is_implicit_VR=syntax.is_implicit_VR,
                          is_little_endian=syntax.is_little_endian)
    with config.disable_value_validation():  # the corpus holds deliberately odd values (old date formats ...)
        for keyword, value in values.items():
            if value is not None:
                setattr(dataset, keyword, value)
        if has_pixels and "PixelData" not in attributes:
            dataset.SamplesPerPixel = samples
            dataset.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
            if samples == 3:
                dataset.PlanarConfiguration = 0
            dataset.Rows, dataset.Columns = _ROWS, _COLUMNS
            dataset.BitsAllocated = bits_allocated
            dataset.BitsStored = bits_allocated if bits_allocated == 8 else 12
            dataset.HighBit = dataset.BitsStored - 1
            dataset.PixelRepresentation = 0
            dataset.PixelData = _pixel_data(bits_allocated, samples, int(str(values["InstanceNumber"] or 0)),
                                            syntax.is_little_endian)
            dataset["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    return dataset


def make_ct(**attributes: object) -> FileDataset:
    """A CT Image Storage instance (see ``make_instance``)."""
    return make_instance(CTImageStorage, **attributes)


def make_mr(**attributes: object) -> FileDataset:
    """An MR Image Storage instance (see ``make_instance``)."""
    return make_instance(MRImageStorage, **attributes)


def make_us(**attributes: object) -> FileDataset:
    """An Ultrasound Image Storage instance, 8-bit RGB (see ``make_instance``)."""
    return make_instance(UltrasoundImageStorage, **attributes)


def make_sc(**attributes: object) -> FileDataset:
    """A Secondary Capture Image Storage instance, modality OT (see ``make_instance``)."""
    return make_instance(SecondaryCaptureImageStorage, **attributes)


def make_sr(**attributes: object) -> FileDataset:
    """A Basic Text SR instance without content (see ``make_instance``)."""
    return make_instance(BasicTextSRStorage, **attributes)


def make_pr(**attributes: object) -> FileDataset:
    """A Grayscale Softcopy Presentation State instance (see ``make_instance``)."""
    return make_instance(GrayscaleSoftcopyPresentationStateStorage, **attributes)


def write_instance(dataset: FileDataset, path: str | Path) -> Path:
    """Save ``dataset`` as a DICOM file in the transfer syntax of its file meta information."""
    path = Path(path)
    with config.disable_value_validation():
        dataset.save_as(path, enforce_file_format=True)
    return path


# --- the corpus ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Series:
    """A series: its SOP class, number and how many instances (with which InstanceNumbers)."""
    sop_class_uid: str
    number: str | None
    instance_numbers: tuple[str | None, ...]
    attributes: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A study: its study-level attributes (``StudyDate`` etc., ``None`` = absent) and series."""
    attributes: dict[str, object]
    series: tuple[Series, ...]
    transfer_syntax: str = ExplicitVRLittleEndian
    specific_character_set: str | None = None  # None: the patient's


@dataclass(frozen=True)
class Patient:
    """A patient: patient-level attributes, the character set of its files, and its studies."""
    attributes: dict[str, object]
    studies: tuple[Study, ...]
    specific_character_set: str | None = None


def _study(date: str | None, time: str | None, accession: str, description: str | None,
           series: tuple[Series, ...], **more: object) -> Study:
    """A study; ``more`` holds further attributes, ``transfer_syntax`` and ``specific_character_set``."""
    transfer_syntax = str(more.pop("transfer_syntax", ExplicitVRLittleEndian))
    charset = more.pop("specific_character_set", None)
    return Study({"StudyDate": date, "StudyTime": time, "AccessionNumber": accession,
                  "StudyDescription": description, **more}, series, transfer_syntax, charset)


PATIENTS: tuple[Patient, ...] = (
    Patient({"PatientName": "Doe^John", "PatientID": "PAT001", "IssuerOfPatientID": "HOSPITAL_A",
             "OtherPatientIDs": ["OLD001", "MRN-9"], "PatientBirthDate": "19700101",
             "PatientBirthTime": "083000", "PatientSex": "M", "EthnicGroup": "NONE"}, (
        _study("20190312", "101010.5", "ACC1001", "Head  CT ", (
            Series(CTImageStorage, "1", ("1", "2", "10"), {"SeriesDescription": "Axial"}),
            Series(CTImageStorage, "2", ("1", "2")),
            Series(GrayscaleSoftcopyPresentationStateStorage, "99", ("1",)),
        ), StudyID="S1", ReferringPhysicianName="Welby^Marcus", NameOfPhysiciansReadingStudy="House^Gregory",
            PatientAge="049Y", PatientSize="1.80", PatientWeight="82", OtherStudyNumbers=["12", "13"],
            AdmittingDiagnosesDescription="Headache", Occupation="Baker"),
        _study("20240229", "235959", "ACC1002", " Chest X", (
            Series(MRImageStorage, "1", ("1", "2", "3")),
            Series(MRImageStorage, "2", ("4", "5", "6")),
            Series(BasicTextSRStorage, "3", ("1",)),
        ), StudyID="S2", ReferringPhysicianName="Welby^Marcus", PatientAge="054Y", PatientSize="1.8",
            PatientWeight="80.5", transfer_syntax=ImplicitVRLittleEndian),
    )),
    Patient({"PatientName": "Doe^John", "PatientID": "PAT002", "PatientBirthDate": "19851224",
             "PatientSex": "M"}, (
        _study("20001231", "000000", "ACC2001", "Abdomen", (
            Series(UltrasoundImageStorage, "1", ("1", "2")),
            Series(SecondaryCaptureImageStorage, "2", ("1",)),
        ), StudyID="1", ReferringPhysicianName="Kildare^James", PatientAge="015Y", PatientWeight="60",
            transfer_syntax=ImplicitVRLittleEndian),
    )),
    Patient({"PatientName": "Müller^Jörg", "PatientID": "PAT003", "PatientBirthDate": "19551105",
             "PatientSex": "M", "OtherPatientNames": "Mueller^Joerg", "IssuerOfPatientID": "KLINIK_Ö"}, (
        _study("20210615", "0930", "ACC3001", "Knie rechts", (
            Series(MRImageStorage, "1", ("1", "2", "3")),
            Series(MRImageStorage, "2", ("1", "2")),
        ), StudyID="K1", ReferringPhysicianName="Schäfer^Günther", NameOfPhysiciansReadingStudy="Weiß^Ute",
            PatientAge="065Y", transfer_syntax=ExplicitVRBigEndian),
        _study("19991231", "12", "ACC3002", "Ärztliche Überweisung", (
            Series(CTImageStorage, "1", ("1", "2")),
            Series(ComprehensiveSRStorage, "2", ("1",)),
        ), StudyID="K2", ReferringPhysicianName="Schäfer^Günther", PatientAge="044Y", PatientSize="1.75",
            PatientWeight="70.5"),
    ), LATIN1),
    Patient({"PatientName": "Παπαδόπουλος^Γιάννης", "PatientID": "PAT004", "PatientBirthDate": "19801010",
             "PatientSex": "M", "OtherPatientNames": "Papadopoulos^Giannis"}, (
        _study("20220101", "080000", "ACC4001", "Θώρακας", (
            Series(CTImageStorage, "1", ("1", "2", "3")),
            Series(CTImageStorage, "2", ("1",)),
        ), StudyID="G1", ReferringPhysicianName="Νικολάου^Μαρία", PatientAge="041Y"),
    ), UTF8),
    Patient({"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう", "PatientID": "PAT005",
             "PatientBirthDate": "19900202", "PatientSex": "M"}, (
        _study("20230517", "143000.123456", "ACC5001", "腹部超音波", (
            Series(UltrasoundImageStorage, "1", ("1", "2", "3")),
            Series(SecondaryCaptureImageStorage, "2", ("1",)),
        ), StudyID="J1", ReferringPhysicianName="Suzuki^Ichiro", PatientAge="033Y"),
    ), UTF8),
    Patient({"PatientName": "SMITH^ANNE", "PatientID": "PAT006", "PatientBirthDate": "19450704",
             "PatientSex": "F"}, (
        _study("20180101", "070000", "ACC6001", "HIP", (
            Series(ComputedRadiographyImageStorage, "1", ("1", "2")),
        ), StudyID="1", ReferringPhysicianName="", PatientAge="072Y", PatientSize="1.60", PatientWeight="55"),
    )),
    Patient({"PatientName": "Smith^Anne", "PatientID": "PAT007", "PatientBirthDate": "19450704",
             "PatientSex": "F", "OtherPatientIDs": "PAT006"}, (
        _study("20180102", "0700", "ACC7001", "hip", (
            Series(ComputedRadiographyImageStorage, "1", ("1",)),
            Series(CTImageStorage, "2", ("1", "2", "3", "4")),
        ), StudyID="1", ReferringPhysicianName="Doe^John", PatientAge="072Y", PatientSize="1.60"),
        _study("20180103", "070000.000", "ACC7002", "Hip follow-up", (
            Series(CTImageStorage, "1", ("1", "2")),
        ), StudyID="2", PatientAge="072Y", transfer_syntax=ExplicitVRBigEndian),
    )),
    Patient({"PatientName": "Nodate^Nina", "PatientID": "PAT008", "PatientBirthDate": None,
             "PatientSex": None}, (
        _study(None, None, "", None, (
            Series(SecondaryCaptureImageStorage, None, (None, "1")),
            Series(CTImageStorage, "1", ("1", "2")),
        ), StudyID=None, ReferringPhysicianName=None, PatientAge=None),
        _study("2023.05.17", "10:10:10", "ACC8002", "Old style date", (
            Series(CTImageStorage, "1", ("1", "2")),
        ), StudyID="OLD"),
    )),
    Patient({"PatientName": "Sørensen^Åse", "PatientID": "PAT009", "PatientBirthDate": "19770303",
             "PatientSex": "F"}, (
        _study("20200229", "121212", "ACC9001", "Mammographie", (
            Series(MRImageStorage, "1", ("1", "2")),
        ), StudyID="M1", ReferringPhysicianName="Ærø^Øyvind", PatientAge="043Y", PatientWeight="64"),
        _study("20220712", "1530", "ACC9002", "Kontrolle", (
            Series(CTImageStorage, "1", ("1", "2")),
        ), StudyID="M2", PatientAge="045Y", specific_character_set=LATIN1),
    ), UTF8),
    Patient({"PatientName": "Test*Star?", "PatientID": "PAT*10", "PatientBirthDate": "20010911",
             "PatientSex": "O"}, (
        _study("20091109", "235959.999999", "ACC*10", "Wildcards * and ? in data", (
            Series(SecondaryCaptureImageStorage, "1", ("1", "2")),
            Series(CTImageStorage, "2", ("1",)),
        ), StudyID="W*", PatientAge="008Y", PatientSize="1.30", PatientWeight="28"),
    )),
    Patient({"PatientName": "Lee^Kim", "PatientID": "PAT011", "PatientBirthDate": "19600101",
             "PatientSex": "F"}, (
        _study("20191001", "090000", "ACC11001", "CT  Abdomen  ", (
            Series(CTImageStorage, "1", ("1", "2", "3", "4", "5")),
            Series(CTImageStorage, "2", ("1", "2", "3")),
            Series(GrayscaleSoftcopyPresentationStateStorage, "3", ("1",)),
        ), StudyID="A1", ReferringPhysicianName="Welby^Marcus", PatientAge="059Y", PatientSize="1.65",
            PatientWeight="59.9"),
        _study("20191002", "090000", "ACC11002", "MR Brain", (
            Series(MRImageStorage, "1", ("1", "2", "3", "4")),
            Series(MRImageStorage, "2", ("1", "2", "3", "4")),
        ), StudyID="A2", ReferringPhysicianName="House^Gregory", PatientAge="059Y",
            transfer_syntax=ImplicitVRLittleEndian),
    )),
)
"""The corpus: 11 patients (two named ``Doe^John``), 17 studies, 71 instances."""


def corpus_datasets() -> list[tuple[str, FileDataset]]:
    """The corpus as (file name, data set) pairs, in storing order."""
    result = []
    for p, patient in enumerate(PATIENTS, start=1):
        for s, study in enumerate(patient.studies, start=1):
            charset = study.specific_character_set or patient.specific_character_set
            for r, series in enumerate(study.series, start=1):
                for i, number in enumerate(series.instance_numbers, start=1):
                    attributes = {
                        **patient.attributes, **study.attributes, **series.attributes,
                        "SpecificCharacterSet": charset,
                        "StudyInstanceUID": uid(p, s),
                        "SeriesInstanceUID": uid(p, s, r),
                        "SOPInstanceUID": uid(p, s, r, i),
                        "SeriesNumber": series.number,
                        "InstanceNumber": number,
                        "SeriesDate": study.attributes.get("StudyDate"),
                    }
                    dataset = make_instance(series.sop_class_uid, study.transfer_syntax, **attributes)
                    result.append((f"p{p:02d}s{s}r{r}i{i}.dcm", dataset))
    return result


def write_corpus(directory: str | Path) -> list[Path]:
    """Write the corpus into ``directory`` (created if needed); the files in storing order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [write_instance(dataset, directory / name) for name, dataset in corpus_datasets()]
