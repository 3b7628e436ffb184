"""The UIDs qrscp speaks: transfer syntaxes, services, and the storage SOP classes of the reference.

The storage table (``storage_sop_classes.tsv``, from DCMTK 3.7.0's ``dcuid.cc``) says which SOP classes
the reference accepts and the file-name prefix of each; ``dcmtk_uid_names.tsv`` holds DCMTK's names of
UIDs (in message dumps, and in ``-xf`` profiles instead of UIDs). (Its column of the classes the reference proposes
on C-MOVE sub-associations is not used: qrscp proposes the SOP classes of the matched instances.)
"""
from __future__ import annotations

import csv
from importlib import resources

from qrscp import __version__

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

#: The implementation we announce in associations and write into file meta information (pydicom's).
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1"
IMPLEMENTATION_VERSION_NAME = "QRSCP_" + __version__.replace(".", "")

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
UNCOMPRESSED = (EXPLICIT_VR_LE, EXPLICIT_VR_BE, IMPLICIT_VR_LE)

VERIFICATION = "1.2.840.10008.1.1"
#: DCMTK's private "shut down" SOP class (``--allow-shutdown``).
PRIVATE_SHUTDOWN = "1.2.276.0.7230010.3.4.1915765545.18030.917282194.0"

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_STUDY_ONLY_FIND = "1.2.840.10008.5.1.4.1.2.3.1"
PATIENT_STUDY_ONLY_MOVE = "1.2.840.10008.5.1.4.1.2.3.2"
PATIENT_STUDY_ONLY_GET = "1.2.840.10008.5.1.4.1.2.3.3"

PATIENT_ROOT_MODELS = (PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET)
STUDY_ROOT_MODELS = (STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET)
PATIENT_STUDY_ONLY_MODELS = (PATIENT_STUDY_ONLY_FIND, PATIENT_STUDY_ONLY_MOVE, PATIENT_STUDY_ONLY_GET)
FIND_MODELS = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND, PATIENT_STUDY_ONLY_FIND)
MOVE_MODELS = (PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE, PATIENT_STUDY_ONLY_MOVE)
GET_MODELS = (PATIENT_ROOT_GET, STUDY_ROOT_GET, PATIENT_STUDY_ONLY_GET)
#: The FIND model that goes with each MOVE/GET model (``--require-find``).
FIND_FOR_RETRIEVE = dict(zip(MOVE_MODELS + GET_MODELS, FIND_MODELS + FIND_MODELS))

def _read_storage_table() -> tuple[dict[str, str], frozenset[str]]:
    prefixes: dict[str, str] = {}
    accepted: set[str] = set()
    text = resources.files("qrscp.dicom").joinpath("storage_sop_classes.tsv").read_text()
    rows = csv.reader((line for line in text.splitlines() if not line.startswith("#")), delimiter="\t")
    for _name, uid, is_accepted, _is_proposed, prefix in rows:
        prefixes[uid] = prefix
        if is_accepted == "1":
            accepted.add(uid)
    return prefixes, frozenset(accepted)


#: SOP class UID -> file-name prefix (``dcmSOPClassUIDToModality``); unknown classes use ``XX``.
FILE_PREFIXES, STORAGE_SOP_CLASSES = _read_storage_table()


def _read_names() -> dict[str, str]:
    text = resources.files("qrscp.dicom").joinpath("dcmtk_uid_names.tsv").read_text()
    return dict(csv.reader((line for line in text.splitlines() if not line.startswith("#")), delimiter="\t"))


#: DCMTK's name of a UID -> the UID (``VerificationSOPClass``, ``FINDStudyRootQueryRetrieveInformationModel``).
UID_BY_DCMTK_NAME = _read_names()
_DCMTK_NAME_BY_UID = {uid: name for name, uid in UID_BY_DCMTK_NAME.items()}


def dcmtk_name(uid: str) -> str:
    """DCMTK's name of ``uid`` as its message dumps show it, else the UID itself."""
    return _DCMTK_NAME_BY_UID.get(uid, uid)


def file_prefix(sop_class_uid: str) -> str:
    """The file-name prefix DCMTK uses for ``sop_class_uid`` (``XX`` if unknown)."""
    return FILE_PREFIXES.get(sop_class_uid, "XX")
