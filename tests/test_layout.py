"""The layout documents itself truly: docs/design.md's table names every module of src/factgpt/
and exactly the modules each one imports, and the README's layout lists every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "factgpt"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__"))


def _imports(module: str) -> set[str]:
    """The factgpt modules `module` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("factgpt"):
            if node.module == "factgpt":  # from factgpt import stages
                found |= {a.name for a in node.names if a.name in MODULES}
            else:
                found.add(node.module.split(".")[1])
    return found - {module}


def _design_table() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)\.py` \|[^|]*\| ([^|]*) \|$", text, re.M)  # module | what it is | may touch
    assert len(rows) == len({module for module, _ in rows}), "a module has two rows"
    return {module: set(re.findall(r"`(\w+)`", touches)) & set(MODULES) for module, touches in rows}


def test_design_names_every_module_and_what_it_imports():
    table = _design_table()
    assert sorted(table) == MODULES
    for module in MODULES:
        if module == "cli":  # "every module above"
            continue
        assert table[module] == _imports(module), module


def test_readme_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    assert [m for m in MODULES if f"  {m}.py " not in layout] == []
