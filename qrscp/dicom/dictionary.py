"""The DICOM data dictionary (VRs, keywords, private VRs): pydicom's tables, read without importing pydicom.

The archive needs the dictionary for every implicit-VR data set and every query key, but nothing else of
pydicom on its common paths; importing the ``pydicom`` package, though, also imports its pixel machinery
and an HTTP client (about 75 ms and several MB per process). So this module loads pydicom's two table
modules (``_dicom_dict``, ``_private_dict``: plain dicts) by file, apart from the package, and answers the
few questions pydicom's ``datadict`` answers, the same way (repeating groups matched by their masks,
private elements by their creator and block-agnostic keys).
"""
from __future__ import annotations

import importlib.util
import sys
from functools import cache
from types import ModuleType


def _table(name: str) -> ModuleType:
    """pydicom's table module ``name``, loaded on its own (cached in ``sys.modules`` under our name)."""
    qualified = f"qrscp.dicom._pydicom{name}"
    module = sys.modules.get(qualified)
    if module is None:
        package = importlib.util.find_spec("pydicom")
        assert package is not None and package.submodule_search_locations, "pydicom is not installed"
        spec = importlib.util.spec_from_file_location(qualified, f"{package.submodule_search_locations[0]}/{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[qualified] = module
    return module


@cache
def _standard() -> tuple[dict, dict, list[tuple[str, int, int]]]:
    table = _table("_dicom_dict")
    masks = [(mask, int(mask.replace("x", "0"), 16), int("".join("F0"[c == "x"] for c in mask), 16))
             for mask in table.RepeatersDictionary]
    return table.DicomDictionary, table.RepeatersDictionary, masks


def entry(tag: int) -> tuple[str, str, str, str, str]:
    """(VR, VM, name, retired, keyword) of a standard element, repeating groups included; KeyError if unknown."""
    elements, repeaters, masks = _standard()
    try:
        return elements[tag]
    except KeyError:
        if not tag >> 16 & 1:
            for mask, fixed, care in masks:
                if (tag ^ fixed) & care == 0:
                    return repeaters[mask]
        raise


def vr(tag: int) -> str:
    """The VR of a standard element (KeyError if unknown)."""
    return entry(tag)[0]


def keyword(tag: int) -> str:
    """The keyword of a standard element, or ""."""
    try:
        return entry(tag)[4]
    except KeyError:
        return ""


def private_vr(tag: int, creator: str) -> str:
    """The VR of private element ``tag`` of ``creator`` (KeyError if unknown)."""
    private = _table("_private_dict").private_dictionaries[creator]
    group, element = f"{tag >> 16:04X}", f"{tag & 0xFFFF:04X}"
    for key in (group + element, f"{group}xx{element[-2:]}", f"{group[:2]}xxxx{element[-2:]}"):
        if key in private:
            return private[key][0]
    raise KeyError(tag)
