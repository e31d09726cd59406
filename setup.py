"""The package list, discovered from the folders (pyproject.toml holds everything else).

``vlbench/`` is the engine; ``models/`` and ``tasks/`` ship inside it as ``vlbench.models`` and
``vlbench.tasks`` (``package-dir`` in pyproject.toml), so a new plugin folder with an
``__init__.py`` is packaged without being listed anywhere.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
MAPPING = {"vlbench": "vlbench", "vlbench.models": "models", "vlbench.tasks": "tasks"}


def packages() -> list[str]:
    """Every folder with an ``__init__.py`` under the mapped roots, as a dotted package name."""
    found = []
    for name, folder in MAPPING.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            found.append(".".join([name, *init.parent.relative_to(ROOT / folder).parts]))
    return found


setup(packages=packages())
