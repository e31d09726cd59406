"""The engine (``vlbench/``) meets plugins only through the registry and written protocols."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_PACKAGES = ("vlbench.models", "vlbench.tasks")


def plugin_imports(path: Path) -> list[str]:
    """Modules of a plugin package that ``path`` imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found += [n for n in names if n.startswith(PLUGIN_PACKAGES)]
    return found


def test_engine_imports_no_plugin_module():
    offenders = {str(p.relative_to(ROOT)): plugin_imports(p) for p in (ROOT / "vlbench").rglob("*.py")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"engine files import plugin modules: {offenders}"


def test_the_check_catches_a_lazy_import(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from vlbench.tasks.qa import QATask\n    import vlbench.models.lxmert\n")
    assert plugin_imports(bad) == ["vlbench.tasks.qa", "vlbench.tasks.qa.QATask", "vlbench.models.lxmert"]
