"""models/ and tasks/ ship inside the package as vlbench.models / vlbench.tasks, in every install."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {"vlbench": "vlbench", "vlbench.models": "models", "vlbench.tasks": "tasks"}


def package_folders() -> set[str]:
    found = set()
    for name, folder in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    return found


def test_packages_are_discovered_not_listed():
    # A hand-kept list falls behind the folders; setup.py discovers them.
    assert "packages" not in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {"vlbench.engine", "vlbench.models.lxmert", "vlbench.tasks.gqa"} <= package_folders()


def test_no_top_level_models_or_tasks_import():
    for path in [*ROOT.glob("vlbench/**/*.py"), *ROOT.glob("models/**/*.py"), *ROOT.glob("tasks/**/*.py")]:
        text = path.read_text()
        for bad in ("\nimport models", "\nfrom models", "\nimport tasks", "\nfrom tasks"):
            assert bad not in text, f"{path} imports a top-level '{bad.split()[-1]}'"


@pytest.mark.slow
def test_wheel_contains_plugins_under_vlbench(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("vlbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "vlbench/models/lxmert/modeling.py" in names
    assert "vlbench/tasks/gqa/task.py" in names
    for package in package_folders():  # every plugin folder ships, none listed by hand
        assert package.replace(".", "/") + "/__init__.py" in names
    assert not any(n.startswith(("models/", "tasks/")) for n in names)
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "vlbench = vlbench.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()
