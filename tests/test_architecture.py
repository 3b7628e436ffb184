"""ARCHITECTURE.md stays true: every module, path and dotted name its tour cites exists in the code."""
from __future__ import annotations

import importlib
import pkgutil
import re

import qrscp
from conftest import ROOT

TEXT = (ROOT / "ARCHITECTURE.md").read_text()
CITED = set(re.findall(r"`([^`\s]+)`", TEXT))


def _modules() -> dict[str, object]:
    """Every module of the package, by its dotted name below ``qrscp`` and by its last part."""
    found = {}
    for info in pkgutil.walk_packages(qrscp.__path__, "qrscp."):
        if info.name.endswith("__main__"):    # importing it runs the program
            continue
        module = importlib.import_module(info.name)
        found[info.name.removeprefix("qrscp.")] = module
        found.setdefault(info.name.rsplit(".", 1)[1], module)
    return found


MODULES = {**_modules(), **{name: importlib.import_module(name) for name in ("conftest", "rawpeer", "health")}}
CLASSES = {name: value for module in MODULES.values() for name, value in vars(module).items()
           if isinstance(value, type) and value.__module__ == module.__name__}


def _has(owner: object, attribute: str) -> bool:
    """An attribute, or a field a dataclass declares without a default."""
    return hasattr(owner, attribute) or attribute in getattr(owner, "__annotations__", {})


def _resolves(name: str) -> bool:
    parts = name.removeprefix("qrscp.").split(".")
    for cut in range(len(parts), 0, -1):          # the longest module prefix, then attributes
        owner = MODULES.get(".".join(parts[:cut])) or (CLASSES.get(parts[0]) if cut == 1 else None)
        if owner is None:
            continue
        for attribute in parts[cut:]:
            if not _has(owner, attribute):
                return False
            owner = getattr(owner, attribute, None)
        return True
    return False


def test_cited_files_and_packages_exist():
    files = [name for name in CITED if name.endswith((".py", "/")) and not name.startswith("docs")]
    assert files, "the tour cites no modules"
    package_files = {path.name for path in (ROOT / "qrscp").rglob("*.py")}
    for name in files:
        assert (ROOT / name).exists() or name in package_files, name


def test_cited_names_exist():
    dotted = [name.split("(")[0] for name in CITED if "." in name and not name.endswith((".py", ".md", ".cfg", ".dat"))
              and re.fullmatch(r"[A-Za-z_][\w.]*", name) and not name.startswith(("qrscp.log.", "docs"))]
    assert len(dotted) > 40, "the tour cites too few names to be a tour"
    assert [name for name in dotted if not _resolves(name)] == []


def test_cited_documents_exist():
    for document in re.findall(r"docs/[\w./-]+\.md", TEXT):
        assert (ROOT / document).exists(), document
