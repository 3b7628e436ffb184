"""The package's layering (ARCHITECTURE.md, setup.cfg's import-linter contracts): a wrong-way import fails."""
from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import ROOT


def test_the_import_contracts_hold():
    command = shutil.which("lint-imports")
    assert command, "import-linter is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([command, "--config", str(ROOT / "setup.cfg")], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_wrong_way_import_is_caught(tmp_path):
    """The contracts are not vacuous: the same check on a copy of the package with one service importing
    the archive fails."""
    copy = tmp_path / "qrscp"
    shutil.copytree(ROOT / "qrscp", copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    verification = copy / "services" / "verification.py"
    verification.write_text(verification.read_text() + "\nfrom qrscp.archive import index  # noqa\n")
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                             "lint_imports_command()", "--config", "setup.cfg"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0, result.stdout
    assert "qrscp.services.verification -> qrscp.archive.index" in result.stdout
