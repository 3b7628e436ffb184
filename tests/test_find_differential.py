"""Differential C-FIND tests: the same corpus, the same queries, qrscp against DCMTK's dcmqrscp (docs/matching.md).

The corpus of ``corpus.py`` is stored once into our server and once into DCMTK's (separate storage areas,
same configuration, same AE title ``QRSCP``); every query of ``QUERIES`` then runs through DCMTK's
``findscu`` against both, without and with ``--check-find``. A query's answer is the list of response
identifiers (each a dump, in response order) and the final status. Ours must equal DCMTK's live answer, and
both must equal the answer pinned in ``data/find_expected.json``.

Without DCMTK only our server runs (stored into and queried with pynetdicom) and is compared with the pinned
answers. ``QRSCP_REGENERATE_EXPECTED=1 pytest tests/test_find_differential.py`` rewrites the pinned file from
DCMTK's answers (after a change of the corpus or of the query table).
"""
from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from answers import assert_same_answers, request_charset
from conftest import HAVE_DCMTK, Server, run_dcmtk, simple_config
from corpus import uid, write_corpus
from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

EXPECTED_PATH = Path(__file__).parent / "data" / "find_expected.json"
REGENERATE = os.environ.get("QRSCP_REGENERATE_EXPECTED") == "1"
AE_TITLE = "QRSCP"
MODES = {"default": (), "check-find": ("-XF",)}
"""Server runs: name -> extra command-line options of both servers."""
MODELS = {
    "P": ("-P", PatientRootQueryRetrieveInformationModelFind),
    "S": ("-S", StudyRootQueryRetrieveInformationModelFind),
    "O": ("-O", PatientStudyOnlyQueryRetrieveInformationModelFind),
}
"""Information model: letter -> (findscu option, C-FIND SOP class)."""


# --- the query table ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """One C-FIND identifier: ``keys`` as findscu's ``-k`` arguments (``Name=value`` or ``Name`` = empty;
    ``Name`` is a dictionary keyword or ``gggg,eeee``), values encoded with ``encoding`` on the wire."""
    name: str
    model: str
    keys: tuple[str, ...]
    encoding: str = "utf-8"

    def key_elements(self) -> list[tuple[int, bytes]]:
        """(tag, value bytes) of every key."""
        elements = []
        for key in self.keys:
            name, _, value = key.partition("=")
            tag = Tag(name.split(",")) if "," in name else Tag(tag_for_keyword(name))
            elements.append((int(tag), value.encode(self.encoding)))
        return elements

    def findscu_arguments(self) -> list[str]:
        """The ``-k`` options; the values' bytes pass through the command line unchanged."""
        arguments = []
        for key in self.keys:
            arguments += ["-k", os.fsdecode(key.encode(self.encoding))]
        return arguments


def q(name: str, model: str, level: str | None, *keys: str, encoding: str = "utf-8") -> Query:
    """A query at ``level`` (None: without QueryRetrieveLevel)."""
    level_key = () if level is None else (f"QueryRetrieveLevel={level}" if level else "QueryRetrieveLevel",)
    names = [key.partition("=")[0] for key in level_key + keys]
    if len(set(names)) != len(names):  # findscu would keep only the last of them
        raise ValueError(f"{name}: a key is given twice")
    return Query(name, model, level_key + keys, encoding)


PAT_KEYS = ("PatientName", "PatientID")
STUDY_KEYS = ("StudyInstanceUID", "PatientID")
LATIN1 = "SpecificCharacterSet=ISO_IR 100"
UTF8 = "SpecificCharacterSet=ISO_IR 192"

QUERIES: tuple[Query, ...] = (
    # Patient Root, PATIENT level
    q("p_patient_universal", "P", "PATIENT", *PAT_KEYS, "PatientBirthDate", "PatientSex", "PatientBirthTime",
      "IssuerOfPatientID", "0010,1000", "OtherPatientNames", "EthnicGroup"),
    q("p_patient_name_exact_shared", "P", "PATIENT", "PatientName=Doe^John", "PatientID", "PatientBirthDate"),
    q("p_patient_name_star", "P", "PATIENT", "PatientName=Doe*", "PatientID"),
    q("p_patient_name_star_only", "P", "PATIENT", "PatientName=*", "PatientID"),
    q("p_patient_name_question", "P", "PATIENT", "PatientName=Sm?th^Anne", "PatientID"),
    q("p_patient_name_case_upper", "P", "PATIENT", "PatientName=SMITH^ANNE", "PatientID"),
    q("p_patient_name_case_lower", "P", "PATIENT", "PatientName=smith*", "PatientID"),
    q("p_patient_name_no_pn_components", "P", "PATIENT", "PatientName=Doe", "PatientID"),
    q("p_patient_name_spaces_trimmed", "P", "PATIENT", "PatientName=  Doe^John  ", "PatientID"),
    q("p_patient_name_star_in_data", "P", "PATIENT", "PatientName=Test*Star?", "PatientID"),
    q("p_patient_id_question", "P", "PATIENT", "PatientID=PAT00?", "PatientName"),
    q("p_patient_id_star_literal", "P", "PATIENT", "PatientID=PAT*10", "PatientName"),
    q("p_patient_id_trailing_space", "P", "PATIENT", "PatientID=PAT001 ", "PatientName"),
    q("p_patient_id_list_is_literal", "P", "PATIENT", "PatientID=PAT001\\PAT002", "PatientName"),
    q("p_patient_id_questions_only", "P", "PATIENT", "PatientID=??????", "PatientName"),
    q("p_patient_id_too_long", "P", "PATIENT", "PatientID=" + "A" * 70, "PatientName"),
    q("p_patient_name_double_star", "P", "PATIENT", "PatientName=**", "PatientID"),
    q("p_patient_name_spaces_only", "P", "PATIENT", "PatientName=   ", "PatientID"),
    q("p_patient_name_components_wildcard", "P", "PATIENT", "PatientName=Yamada^Tarou=*", "PatientID"),
    q("p_patient_name_several_stars", "P", "PATIENT", "PatientName=*o*e*", "PatientID"),
    q("p_patient_name_list_is_literal", "P", "PATIENT", "PatientName=Doe^John\\Smith^Anne", "PatientID"),
    q("p_patient_sex_star_matches_empty", "P", "PATIENT", "PatientSex=*", "PatientID"),
    q("p_patient_birthdate_star", "P", "PATIENT", "PatientBirthDate=*", "PatientID"),
    q("p_patient_birthdate_single", "P", "PATIENT", "PatientBirthDate=19450704", *PAT_KEYS),
    q("p_patient_birthdate_range", "P", "PATIENT", "PatientBirthDate=19500101-19801231", *PAT_KEYS),
    q("p_patient_birthdate_open_end", "P", "PATIENT", "PatientBirthDate=19800101-", *PAT_KEYS),
    q("p_patient_birthdate_open_start", "P", "PATIENT", "PatientBirthDate=-19600101", *PAT_KEYS),
    q("p_patient_birthtime_range", "P", "PATIENT", "PatientBirthTime=0800-0900", *PAT_KEYS),
    q("p_patient_sex", "P", "PATIENT", "PatientSex=F", *PAT_KEYS),
    q("p_patient_issuer", "P", "PATIENT", "IssuerOfPatientID=HOSPITAL_A", *PAT_KEYS),
    q("p_patient_other_ids_whole_value", "P", "PATIENT", "0010,1000=OLD001\\MRN-9", *PAT_KEYS),
    q("p_patient_other_ids_one_value", "P", "PATIENT", "0010,1000=OLD001", *PAT_KEYS),
    q("p_patient_other_ids_wildcard", "P", "PATIENT", "0010,1000=*MRN*", *PAT_KEYS),
    q("p_patient_other_names", "P", "PATIENT", "OtherPatientNames=Mue*", *PAT_KEYS),
    q("p_patient_ethnic_group", "P", "PATIENT", "EthnicGroup=NONE", *PAT_KEYS),
    q("p_patient_comments_nonempty", "P", "PATIENT", "PatientComments=x", *PAT_KEYS),
    q("p_patient_comments_empty", "P", "PATIENT", "PatientComments", *PAT_KEYS),
    q("p_patient_lower_level_keys", "P", "PATIENT", *PAT_KEYS, "StudyInstanceUID", "StudyDate", "Modality",
      "SeriesNumber", "SOPInstanceUID", "InstanceNumber", "PatientAge"),
    q("p_patient_unsupported_keys", "P", "PATIENT", "PatientName=Doe*", "PatientID",
      "NumberOfPatientRelatedStudies", "PatientMotherBirthName", "SOPClassUID", "SeriesDescription"),
    q("p_patient_level_lowercase", "P", "patient", *PAT_KEYS),
    q("p_patient_level_suffix", "P", "PATIENTXYZ", "PatientName=Lee*", "PatientID"),
    # Patient Root, STUDY level
    q("p_study_of_patient", "P", "STUDY", "PatientID=PAT001", "StudyInstanceUID", "StudyDate", "StudyTime",
      "AccessionNumber", "StudyDescription", "StudyID"),
    q("p_study_without_patient_id", "P", "STUDY", "StudyDate", "StudyInstanceUID"),
    q("p_study_patient_id_wildcard", "P", "STUDY", "PatientID=PAT00*", "StudyDate=20180101-20191231",
      "StudyInstanceUID"),
    q("p_study_patient_id_universal", "P", "STUDY", "PatientID", "StudyInstanceUID", "AccessionNumber"),
    q("p_study_patient_name_not_matched", "P", "STUDY", "PatientID=PAT001", "PatientName=Nobody",
      "StudyInstanceUID"),
    q("p_study_lower_level_keys", "P", "STUDY", "PatientID=PAT011", "StudyInstanceUID", "Modality",
      "SeriesInstanceUID", "SeriesNumber", "InstanceNumber", "SOPInstanceUID"),
    q("p_study_lower_level_key_not_matched", "P", "STUDY", "PatientID=PAT011", "StudyInstanceUID",
      "Modality=US"),
    # Patient Root, SERIES and IMAGE levels
    q("p_series_of_study", "P", "SERIES", "PatientID=PAT001", f"StudyInstanceUID={uid(1, 1)}",
      "SeriesInstanceUID", "Modality", "SeriesNumber"),
    q("p_series_without_study_uid", "P", "SERIES", "PatientID=PAT001", "SeriesInstanceUID", "Modality"),
    q("p_series_without_patient_id", "P", "SERIES", f"StudyInstanceUID={uid(1, 1)}", "SeriesInstanceUID"),
    q("p_series_modality", "P", "SERIES", "PatientID=PAT011", "StudyInstanceUID", "Modality=MR",
      "SeriesInstanceUID"),
    q("p_series_number_exact", "P", "SERIES", "PatientID", "StudyInstanceUID", "SeriesNumber=2", "Modality"),
    q("p_series_number_star_literal", "P", "SERIES", "PatientID", "StudyInstanceUID", "SeriesNumber=*"),
    q("p_series_modality_list_literal", "P", "SERIES", "PatientID", "StudyInstanceUID", "Modality=CT\\MR"),
    q("p_series_study_uid_list", "P", "SERIES", "PatientID", f"StudyInstanceUID={uid(1, 2)}\\{uid(3, 2)}",
      "SeriesInstanceUID", "Modality", "StudyDate"),
    q("p_image_of_series", "P", "IMAGE", "PatientID=PAT001", f"StudyInstanceUID={uid(1, 1)}",
      f"SeriesInstanceUID={uid(1, 1, 1)}", "SOPInstanceUID", "InstanceNumber"),
    q("p_image_without_series_uid", "P", "IMAGE", "PatientID=PAT001", f"StudyInstanceUID={uid(1, 1)}",
      "SOPInstanceUID"),
    q("p_image_instance_number", "P", "IMAGE", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
      "InstanceNumber=10", "SOPInstanceUID"),
    q("p_image_sop_uid_list", "P", "IMAGE", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
      f"SOPInstanceUID={uid(1, 1, 1, 1)}\\{uid(1, 1, 1, 3)}", "InstanceNumber"),
    q("p_image_uid_wildcard_literal", "P", "IMAGE", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
      f"SOPInstanceUID={uid(1, 1, 1)}.*"),
    q("p_image_patient_id_star", "P", "IMAGE", "PatientID=*", "StudyInstanceUID", "SeriesInstanceUID",
      "SOPInstanceUID", "InstanceNumber=10"),
    q("p_image_missing_instance_number", "P", "IMAGE", "PatientID=PAT008", f"StudyInstanceUID={uid(8, 1)}",
      "SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber", "SeriesNumber", "StudyDate"),
    # Study Root, STUDY level
    q("s_study_universal", "S", "STUDY", *STUDY_KEYS, "StudyDate", "StudyTime", "AccessionNumber",
      "PatientName", "StudyDescription"),
    q("s_date_single", "S", "STUDY", "StudyDate=20190312", *STUDY_KEYS),
    q("s_date_range", "S", "STUDY", "StudyDate=20180101-20191231", *STUDY_KEYS),
    q("s_date_open_start", "S", "STUDY", "StudyDate=-20001231", *STUDY_KEYS),
    q("s_date_open_end", "S", "STUDY", "StudyDate=20220101-", *STUDY_KEYS),
    q("s_date_invalid_month", "S", "STUDY", "StudyDate=20191301", *STUDY_KEYS),
    q("s_date_invalid_range_part", "S", "STUDY", "StudyDate=20190101-2019123", *STUDY_KEYS),
    q("s_date_wildcard", "S", "STUDY", "StudyDate=2019*", *STUDY_KEYS),
    q("s_date_old_format_query", "S", "STUDY", "StudyDate=2019.03.12", *STUDY_KEYS),
    q("s_date_old_format_record", "S", "STUDY", "StudyDate=20230517", *STUDY_KEYS),
    q("s_date_reversed_range", "S", "STUDY", "StudyDate=20201231-20190101", *STUDY_KEYS),
    q("s_date_list", "S", "STUDY", "StudyDate=20190312\\20240229", *STUDY_KEYS),
    q("s_date_leap_day", "S", "STUDY", "StudyDate=20240229", *STUDY_KEYS),
    q("s_date_spaces", "S", "STUDY", "StudyDate= 20190312 ", *STUDY_KEYS),
    q("s_date_spaces_around_dash", "S", "STUDY", "StudyDate=20190312 - 20191231", *STUDY_KEYS),
    q("s_date_same_bounds", "S", "STUDY", "StudyDate=20190312-20190312", *STUDY_KEYS),
    q("s_date_dash_only", "S", "STUDY", "StudyDate=-", *STUDY_KEYS),
    q("s_date_old_format_range", "S", "STUDY", "StudyDate=2019.01.01-2020.12.31", *STUDY_KEYS),
    q("s_date_iso_dashes", "S", "STUDY", "StudyDate=2019-03-12", *STUDY_KEYS),
    q("s_date_not_leap_year", "S", "STUDY", "StudyDate=20190229", *STUDY_KEYS),
    q("s_time_fraction", "S", "STUDY", "StudyTime=101010.5", *STUDY_KEYS, "StudyDate"),
    q("s_time_fraction_not_equal", "S", "STUDY", "StudyTime=101010", *STUDY_KEYS, "StudyDate"),
    q("s_time_hhmm", "S", "STUDY", "StudyTime=0930", *STUDY_KEYS, "StudyDate"),
    q("s_time_hh", "S", "STUDY", "StudyTime=12", *STUDY_KEYS, "StudyDate"),
    q("s_time_range", "S", "STUDY", "StudyTime=070000-090000", *STUDY_KEYS, "StudyDate"),
    q("s_time_open_start", "S", "STUDY", "StudyTime=-0700", *STUDY_KEYS, "StudyDate"),
    q("s_time_open_end", "S", "STUDY", "StudyTime=2000-", *STUDY_KEYS, "StudyDate"),
    q("s_time_old_format", "S", "STUDY", "StudyTime=10:10:10", *STUDY_KEYS, "StudyDate"),
    q("s_time_invalid", "S", "STUDY", "StudyTime=2500", *STUDY_KEYS, "StudyDate"),
    q("s_time_24h", "S", "STUDY", "StudyTime=240000", *STUDY_KEYS),
    q("s_time_dash_only", "S", "STUDY", "StudyTime=-", *STUDY_KEYS),
    q("s_time_fraction_range", "S", "STUDY", "StudyTime=101010.4-101010.6", *STUDY_KEYS),
    q("s_time_fraction_trailing_zero", "S", "STUDY", "StudyTime=101010.50", *STUDY_KEYS),
    q("s_time_old_format_range", "S", "STUDY", "StudyTime=10:00-10:20", *STUDY_KEYS),
    q("s_date_and_time", "S", "STUDY", "StudyDate=20180101-20181231", "StudyTime=0700", *STUDY_KEYS),
    q("s_accession_exact", "S", "STUDY", "AccessionNumber=ACC1001", *STUDY_KEYS),
    q("s_accession_question", "S", "STUDY", "AccessionNumber=ACC1?0?", *STUDY_KEYS),
    q("s_accession_star_in_data", "S", "STUDY", "AccessionNumber=ACC*10", *STUDY_KEYS),
    q("s_accession_star_matches_empty", "S", "STUDY", "AccessionNumber=*", *STUDY_KEYS),
    q("s_referring_physician", "S", "STUDY", "ReferringPhysicianName=Welby^Marcus", "StudyInstanceUID"),
    q("s_referring_physician_star", "S", "STUDY", "ReferringPhysicianName=*", "StudyInstanceUID"),
    q("s_description_embedded_spaces", "S", "STUDY", "StudyDescription=Head  CT", "StudyInstanceUID"),
    q("s_description_single_space", "S", "STUDY", "StudyDescription=Head CT", "StudyInstanceUID"),
    q("s_description_leading_space_record", "S", "STUDY", "StudyDescription=Chest X", "StudyInstanceUID"),
    q("s_description_trailing_wildcard", "S", "STUDY", "StudyDescription=*Abdomen", "StudyInstanceUID"),
    q("s_description_case", "S", "STUDY", "StudyDescription=hip", "StudyInstanceUID"),
    q("s_study_id", "S", "STUDY", "StudyID=1", "StudyInstanceUID", "PatientID"),
    q("s_reading_physician", "S", "STUDY", "NameOfPhysiciansReadingStudy=House*", "StudyInstanceUID"),
    q("s_other_study_numbers_whole", "S", "STUDY", "0020,1070=12\\13", "StudyInstanceUID"),
    q("s_other_study_numbers_one", "S", "STUDY", "0020,1070=12", "StudyInstanceUID"),
    q("s_admitting_diagnoses", "S", "STUDY", "AdmittingDiagnosesDescription=Head*", "StudyInstanceUID",
      "Occupation"),
    q("s_occupation", "S", "STUDY", "Occupation=Baker", "StudyInstanceUID"),
    q("s_age_exact", "S", "STUDY", "PatientAge=072Y", "StudyInstanceUID"),
    q("s_age_other_form", "S", "STUDY", "PatientAge=72Y", "StudyInstanceUID"),
    q("s_age_star_literal", "S", "STUDY", "PatientAge=*", "StudyInstanceUID"),
    q("s_age_spaces", "S", "STUDY", "PatientAge= 072Y ", "StudyInstanceUID"),
    q("s_size_exact_bytes", "S", "STUDY", "PatientSize=1.8", "StudyInstanceUID"),
    q("s_weight", "S", "STUDY", "PatientWeight=70.5", "StudyInstanceUID", "PatientSize"),
    q("s_weight_other_format", "S", "STUDY", "PatientWeight=70.50", "StudyInstanceUID"),
    q("s_additional_history_nonempty", "S", "STUDY", "AdditionalPatientHistory=x", "StudyInstanceUID"),
    q("s_additional_history_empty", "S", "STUDY", "AdditionalPatientHistory", "StudyInstanceUID"),
    q("s_study_uid_list", "S", "STUDY", f"StudyInstanceUID={uid(1, 1)}\\{uid(3, 2)}\\{uid(99, 1)}",
      "StudyDate", "PatientName"),
    q("s_study_uid_spaces", "S", "STUDY", f"StudyInstanceUID= {uid(1, 1)} ", "StudyDate"),
    q("s_study_uid_spaces_only", "S", "STUDY", "StudyInstanceUID=   ", "StudyDate"),
    q("s_study_uid_long_list", "S", "STUDY",
      "StudyInstanceUID=" + "\\".join(uid(p, s) for p in range(1, 12) for s in (2, 1)), "StudyDate"),
    q("s_study_uid_list_spaces", "S", "STUDY", f"StudyInstanceUID={uid(1, 1)} \\ {uid(1, 2)}", "StudyDate"),
    q("s_study_uid_list_empty_parts", "S", "STUDY", f"StudyInstanceUID=\\\\{uid(1, 1)}\\", "StudyDate"),
    q("s_patient_keys_matched", "S", "STUDY", "PatientName=Doe^John", "PatientBirthDate=19851224",
      "StudyInstanceUID", "PatientID"),
    q("s_lower_level_keys", "S", "STUDY", "StudyInstanceUID", "Modality", "SeriesNumber", "SOPInstanceUID",
      "InstanceNumber"),
    q("s_unsupported_keys", "S", "STUDY", "StudyInstanceUID", "ModalitiesInStudy=CT",
      "NumberOfStudyRelatedInstances", "StudyDate=20190312"),
    q("s_sequence_key_dropped", "S", "STUDY", "StudyInstanceUID", "ReferencedStudySequence",
      "StudyDate=20190312"),
    q("s_patient_level", "S", "PATIENT", *PAT_KEYS),
    q("s_level_lowercase", "S", "study", "StudyInstanceUID", "StudyDate=20180101-20181231"),
    q("s_level_multi_valued", "S", "STUDY\\SERIES", "StudyInstanceUID", "StudyDate=20190312"),
    # Study Root, SERIES and IMAGE levels
    q("s_series_of_study", "S", "SERIES", f"StudyInstanceUID={uid(11, 1)}", "SeriesInstanceUID", "Modality",
      "SeriesNumber"),
    q("s_series_without_study_uid", "S", "SERIES", "SeriesInstanceUID", "Modality=CT"),
    q("s_series_study_uid_star_literal", "S", "SERIES", "StudyInstanceUID=*", "SeriesInstanceUID"),
    q("s_series_patient_id_not_matched", "S", "SERIES", "PatientID=NOBODY", f"StudyInstanceUID={uid(7, 1)}",
      "SeriesInstanceUID", "Modality"),
    q("s_series_modality_case", "S", "SERIES", "StudyInstanceUID", "Modality=ct", "SeriesInstanceUID"),
    q("s_series_modality_wildcard", "S", "SERIES", "StudyInstanceUID", "Modality=?R", "SeriesInstanceUID",
      "SeriesNumber"),
    q("s_image_of_series", "S", "IMAGE", f"StudyInstanceUID={uid(11, 1)}", f"SeriesInstanceUID={uid(11, 1, 1)}",
      "SOPInstanceUID", "InstanceNumber"),
    q("s_image_without_series_uid", "S", "IMAGE", f"StudyInstanceUID={uid(11, 1)}", "SOPInstanceUID"),
    q("s_image_instance_number", "S", "IMAGE", "StudyInstanceUID", "SeriesInstanceUID", "InstanceNumber=1",
      "SOPInstanceUID", "SOPClassUID"),
    q("s_image_instance_number_spaces", "S", "IMAGE", "StudyInstanceUID", "SeriesInstanceUID",
      "InstanceNumber= 10 ", "SOPInstanceUID"),
    q("s_image_instance_number_question", "S", "IMAGE", "StudyInstanceUID", "SeriesInstanceUID",
      "InstanceNumber=1?", "SOPInstanceUID"),
    q("s_image_sop_uid_list_spaces", "S", "IMAGE", "StudyInstanceUID", "SeriesInstanceUID",
      f"SOPInstanceUID={uid(1, 1, 1, 1)} \\ {uid(1, 1, 1, 2)} ", "InstanceNumber"),
    q("s_image_upper_keys_returned", "S", "IMAGE", f"StudyInstanceUID={uid(2, 1)}", "SeriesInstanceUID",
      "SOPInstanceUID", "PatientName", "StudyDate", "Modality", "AccessionNumber"),
    q("s_image_level_suffix", "S", "IMAGEX", "StudyInstanceUID", "SeriesInstanceUID",
      f"SOPInstanceUID={uid(5, 1, 1, 2)}"),
    # Patient/Study Only
    q("o_patient", "O", "PATIENT", "PatientName=*a*", "PatientID"),
    q("o_study", "O", "STUDY", "PatientID=PAT011", "StudyInstanceUID", "StudyDate"),
    q("o_study_without_patient_id", "O", "STUDY", "StudyInstanceUID", "StudyDate"),
    q("o_series_lowercase_level", "O", "series", "PatientID=PAT001", f"StudyInstanceUID={uid(1, 1)}",
      "SeriesInstanceUID"),
    q("o_series_below_model", "O", "SERIES", "PatientID=PAT011", f"StudyInstanceUID={uid(11, 2)}",
      "SeriesInstanceUID", "Modality"),
    q("o_image_below_model", "O", "IMAGE", "PatientID=PAT001", f"StudyInstanceUID={uid(1, 1)}",
      f"SeriesInstanceUID={uid(1, 1, 1)}", "SOPInstanceUID"),
    # Malformed identifiers
    q("no_level", "P", None, *PAT_KEYS),
    q("empty_level", "S", "", "StudyInstanceUID"),
    q("blank_level", "S", "   ", "StudyInstanceUID"),
    q("unknown_level", "P", "FOO", *PAT_KEYS),
    q("level_only", "S", "STUDY"),
    q("level_only_patient", "P", "PATIENT"),
    # Character sets
    q("cs_latin1_query_latin1_record", "P", "PATIENT", LATIN1, "PatientName=Müller*", "PatientID",
      encoding="latin-1"),
    q("cs_utf8_query_latin1_record", "P", "PATIENT", UTF8, "PatientName=Müller*", "PatientID",
      "IssuerOfPatientID"),
    q("cs_utf8_query_utf8_record", "P", "PATIENT", UTF8, "PatientName=Παπαδόπουλος*", "PatientID"),
    q("cs_latin1_query_utf8_record", "P", "PATIENT", LATIN1, "PatientName=Sørensen^Åse", "PatientID",
      encoding="latin-1"),
    q("cs_latin1_bytes_without_charset", "P", "PATIENT", "PatientName=Müller*", "PatientID",
      encoding="latin-1"),
    q("cs_utf8_bytes_without_charset", "P", "PATIENT", "PatientName=Müller*", "PatientID"),
    q("cs_utf8_cjk_component", "P", "PATIENT", UTF8, "PatientName=*山田*", "PatientID"),
    q("cs_latin1_query_cjk_record", "P", "PATIENT", LATIN1, "PatientName=Yamada*", "PatientID"),
    q("cs_utf8_all_patients", "P", "PATIENT", UTF8, *PAT_KEYS, "OtherPatientNames"),
    q("cs_latin1_all_patients", "P", "PATIENT", LATIN1, *PAT_KEYS),
    q("cs_ascii_charset_all_studies", "S", "STUDY", "SpecificCharacterSet=ISO_IR 6", "StudyInstanceUID",
      "ReferringPhysicianName", "StudyDescription"),
    q("cs_latin1_question_one_byte", "S", "STUDY", LATIN1, "ReferringPhysicianName=Sch?fer*",
      "StudyInstanceUID", encoding="latin-1"),
    q("cs_utf8_question_one_character", "S", "STUDY", UTF8, "ReferringPhysicianName=Sch?fer*",
      "StudyInstanceUID"),
    q("cs_utf8_question_one_byte_same_charset", "P", "PATIENT", UTF8, "PatientName=Παπαδόπουλο?^Γιάννης",
      "PatientID"),
    q("cs_utf8_study_description", "S", "STUDY", UTF8, "StudyDescription=Θώρακας", "StudyInstanceUID",
      "PatientName"),
    q("cs_latin1_issuer", "P", "PATIENT", LATIN1, "IssuerOfPatientID=KLINIK_Ö", "PatientID",
      encoding="latin-1"),
    q("cs_utf8_query_mixed_charset_patient", "S", "STUDY", UTF8, "PatientName=Sø*", "StudyInstanceUID",
      "ReferringPhysicianName", "StudyDescription"),
    q("cs_latin1_series_upper_keys", "S", "SERIES", LATIN1, f"StudyInstanceUID={uid(3, 1)}",
      "SeriesInstanceUID", "PatientName", "ReferringPhysicianName", encoding="latin-1"),
    q("cs_latin1_case_sensitive_umlaut", "P", "PATIENT", LATIN1, "PatientName=MÜLLER*", "PatientID",
      encoding="latin-1"),
    q("cs_greek_query", "P", "PATIENT", "SpecificCharacterSet=ISO_IR 126", "PatientName=Π*", "PatientID",
      encoding="iso8859_7"),
    q("cs_cyrillic_request_all", "P", "PATIENT", "SpecificCharacterSet=ISO_IR 144", *PAT_KEYS),
    q("cs_gb18030_request_all", "P", "PATIENT", "SpecificCharacterSet=GB18030", *PAT_KEYS),
    q("cs_empty_charset_key", "P", "PATIENT", "SpecificCharacterSet", "PatientName=Müller*", "PatientID"),
    q("cs_unknown_charset", "P", "PATIENT", "SpecificCharacterSet=ISO_IR 999", "PatientName=M*", "PatientID"),
    q("cs_iso2022_latin1_query", "P", "PATIENT", "SpecificCharacterSet=ISO 2022 IR 100", "PatientName=Müller*",
      "PatientID", encoding="latin-1"),
    q("cs_iso2022_latin1_responses", "P", "PATIENT", "SpecificCharacterSet=ISO 2022 IR 100", *PAT_KEYS),
    q("cs_iso2022_japanese_responses", "P", "PATIENT", "SpecificCharacterSet=\\ISO 2022 IR 87", *PAT_KEYS),
)


# --- running a query and recording its answer ---------------------------------------------------------------------

def _element_line(tag: int, value: bytes) -> str:
    """``(gggg,eeee) VR Keyword [value]`` with the value's bytes (padding removed) shown as UTF-8."""
    try:
        vr, keyword = dictionary_VR(tag), keyword_for_tag(tag)
    except KeyError:
        vr, keyword = "UN", "Unknown"
    text = value.rstrip(b" \0").decode("utf-8", "backslashreplace")
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr} {keyword} [{text}]"


def identifier_dump(dataset: Dataset) -> list[str]:
    """An identifier as one line per element, with the raw value bytes as received."""
    lines = []
    for tag in sorted(dataset.keys()):
        element = dataset.get_item(tag)
        value = element.value
        if value is None:
            value = b""
        elif not isinstance(value, bytes):  # decoded on reading (pydicom does so for SpecificCharacterSet)
            values = [value] if isinstance(value, str) else list(value)
            value = "\\".join(str(v) for v in values).encode()
        lines.append(_element_line(int(tag), value))
    return lines


def findscu(port: int, query: Query) -> dict:
    """``query`` through DCMTK's findscu: {"status": "0xNNNN", "responses": [dump, ...]}."""
    with tempfile.TemporaryDirectory(prefix="findscu") as out:
        result = run_dcmtk("findscu", "-d", MODELS[query.model][0], "-aec", AE_TITLE, "-aet", "FINDSCU",
                           "-X", "-od", out, *query.findscu_arguments(), "127.0.0.1", str(port), timeout=60)
        log = (result.stdout + result.stderr).decode(errors="replace")
        statuses = re.findall(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", log)
        responses = [identifier_dump(dcmread(path, force=True)) for path in sorted(Path(out).glob("rsp*.dcm"))]
    if not statuses:
        return {"status": f"no final response (findscu exit {result.returncode}): {log[-500:]}",
                "responses": responses}
    return {"status": f"0x{int(statuses[-1], 16):04X}", "responses": responses}


def pynetdicom_find(port: int, query: Query) -> dict:
    """``query`` through pynetdicom (for hosts without DCMTK), answered like ``findscu``."""
    _config.LOG_REQUEST_IDENTIFIERS = _config.LOG_RESPONSE_IDENTIFIERS = False  # logging decodes raw values
    identifier = Dataset()  # raw elements in implicit VR little endian: sent byte for byte as findscu does
    charset: str | list[str] = default_encoding
    for tag, value in query.key_elements():
        vr = dictionary_VR(tag)
        padded = value + (b"\0" if vr == "UI" else b" ") * (len(value) % 2)
        identifier[tag] = RawDataElement(Tag(tag), vr, len(padded), padded, 0, True, True)
        if tag == 0x00080005:
            charset = convert_encodings(value.decode().split("\\"))
    identifier.set_original_encoding(True, True, charset)  # what pydicom needs to write raw values as they are
    sop_class = MODELS[query.model][1]
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(sop_class, ImplicitVRLittleEndian)
    association = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    if not association.is_established:
        return {"status": "association failed", "responses": []}
    responses, status = [], "no final response"
    try:
        for response_status, response_identifier in association.send_c_find(identifier, sop_class):
            if not response_status:
                break
            code = int(response_status.Status)
            if code in (0xFF00, 0xFF01):
                responses.append(identifier_dump(response_identifier))
            else:
                status = f"0x{code:04X}"
    finally:
        association.release()
    return {"status": status, "responses": responses}


def store_corpus(port: int, files: list[Path]) -> None:
    """Store ``files`` (in this order) into the server on ``port``, with DCMTK's storescu if installed."""
    if HAVE_DCMTK:
        result = run_dcmtk("storescu", "-aec", AE_TITLE, "127.0.0.1", str(port), *map(str, files), timeout=120)
        assert result.returncode == 0 and b"E:" not in result.stderr + result.stdout, result.stderr.decode()
        return
    datasets = [dcmread(path) for path in files]
    ae = AE(ae_title="STORESCU")
    for sop_class, syntax in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}):
        ae.add_requested_context(sop_class, syntax)  # one context per syntax: each file is sent as it is
    association = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert association.is_established
    try:
        for dataset in datasets:
            status = association.send_c_store(dataset)
            assert status and status.Status == 0, f"C-STORE of {dataset.SOPInstanceUID}: {status}"
    finally:
        association.release()


# --- fixtures -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@contextmanager
def _servers(base: Path, files: list[Path], dcmtk_server: bool) -> Iterator[dict[str, Server]]:
    """One storage area holding the corpus, served once per mode (same area, same AE title)."""
    area = base / "area"
    area.mkdir()
    config = simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"})
    servers: dict[str, Server] = {}
    try:
        for mode, options in MODES.items():
            directory = base / mode
            directory.mkdir()
            servers[mode] = Server(directory, config, *options, dcmtk_server=dcmtk_server)
        store_corpus(servers["default"].port, files)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _answers(servers: dict[str, Server], client: Callable[[int, Query], dict]) -> dict[str, dict[str, dict]]:
    """mode -> query name -> answer, the queries run in parallel."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {mode: {query.name: pool.submit(client, server.port, query) for query in QUERIES}
                   for mode, server in servers.items()}
        return {mode: {name: future.result() for name, future in by_name.items()}
                for mode, by_name in futures.items()}


@pytest.fixture(scope="module")
def dcmtk_answers(tmp_path_factory: pytest.TempPathFactory, corpus_files: list[Path]) -> dict | None:
    """DCMTK's answers to every query in every mode (None without DCMTK); rewrites the pinned file on demand."""
    if not HAVE_DCMTK:
        if REGENERATE:
            pytest.fail("QRSCP_REGENERATE_EXPECTED=1 needs DCMTK's dcmqrscp")
        return None
    with _servers(tmp_path_factory.mktemp("dcmtk"), corpus_files, dcmtk_server=True) as servers:
        answers = _answers(servers, findscu)
    if REGENERATE:
        EXPECTED_PATH.parent.mkdir(exist_ok=True)
        pinned = {query.name: {"model": MODELS[query.model][0], "keys": list(query.keys),
                               "encoding": query.encoding,
                               **{mode: answers[mode][query.name] for mode in MODES}} for query in QUERIES}
        EXPECTED_PATH.write_text(json.dumps(pinned, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return answers


@pytest.fixture(scope="module")
def expected(dcmtk_answers: dict | None) -> dict:
    """The pinned answers (read after a regeneration)."""
    return json.loads(EXPECTED_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def qrscp_answers(tmp_path_factory: pytest.TempPathFactory, corpus_files: list[Path]) -> dict:
    """Our server's answers to every query in every mode."""
    with _servers(tmp_path_factory.mktemp("qrscp"), corpus_files, dcmtk_server=False) as servers:
        return _answers(servers, findscu if HAVE_DCMTK else pynetdicom_find)


# --- the tests ----------------------------------------------------------------------------------------------------

def _difference(answer: dict, reference: dict, name: str, reference_name: str) -> str:
    """A unified diff of two answers, one line per status, response and element."""
    def lines(answer: dict) -> list[str]:
        result = [f"final status {answer['status']}"]
        for number, response in enumerate(answer["responses"], start=1):
            result += [f"response {number}"] + [f"  {line}" for line in response]
        return result
    return "\n".join(difflib.unified_diff(lines(reference), lines(answer), reference_name, name, lineterm=""))


def test_query_table_is_pinned(expected: dict) -> None:
    """Every query of the table has a pinned answer made from the same identifier."""
    assert sorted(expected) == sorted(query.name for query in QUERIES), "regenerate the pinned answers"
    for query in QUERIES:
        pinned = expected[query.name]
        assert (pinned["model"], pinned["keys"], pinned["encoding"]) == (
            MODELS[query.model][0], list(query.keys), query.encoding), f"{query.name}: regenerate the pinned answers"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", QUERIES, ids=lambda query: query.name)
def test_find_matches_dcmtk(query: Query, mode: str, qrscp_answers: dict, dcmtk_answers: dict | None,
                            expected: dict) -> None:
    """Our responses and final status equal DCMTK's (live when installed) and the pinned ones."""
    pinned = expected[query.name][mode]
    if dcmtk_answers is not None:
        live = dcmtk_answers[mode][query.name]
        assert live == pinned, "DCMTK's live answer is not the pinned one: regenerate?\n" + _difference(
            live, pinned, "DCMTK live", "pinned")
    ours = qrscp_answers[mode][query.name]
    assert ours["status"] == pinned["status"], "\n" + _difference(ours, pinned, "qrscp", "DCMTK")
    try:
        assert_same_answers(ours["responses"], pinned["responses"], request_charset(query.keys))
    except AssertionError:
        raise AssertionError("\n" + _difference(ours, pinned, "qrscp", "DCMTK")) from None
