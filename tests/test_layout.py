"""The house keeps its shape: the design table names every module and exactly what each imports, the
README's layout lists them, the study never imports the instruments, no module grows past 400
lines, and every relative link in the README, docs/ and records/ resolves."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "factgpt"
# "batches", ..., "kernels", "lab.answers": every module, a subpackage whose __init__ holds code too
# (kernels), but the package's own __init__ and __main__
MODULES = sorted(".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
                 if not p.stem.startswith("__")) + sorted(
    p.parent.name for p in PACKAGE.glob("*/__init__.py") if p.read_text(encoding="utf-8").strip())
MODULES.sort()
LONGEST = 400  # lines a module may have


def _path(module: str) -> Path:
    package = PACKAGE.joinpath(*module.split("."))
    return package / "__init__.py" if package.is_dir() else package.with_suffix(".py")


def _imports(module: str) -> set[str]:
    """The factgpt modules `module` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(_path(module).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("factgpt"):
            if node.module in ("factgpt", "factgpt.lab"):  # from factgpt import stages
                prefix = node.module[len("factgpt."):] + "." if node.module != "factgpt" else ""
                found |= {prefix + a.name for a in node.names if prefix + a.name in MODULES}
            else:
                found.add(node.module[len("factgpt."):])
        elif isinstance(node, ast.Import):
            found |= {a.name[len("factgpt."):] for a in node.names if a.name.startswith("factgpt.")}
    return found - {module}


def _design_table() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    # module | what it is | may touch; a subpackage's row names its __init__.py
    rows = re.findall(r"^\| `([\w/]+)\.py` \|[^|]*\| ([^|]*) \|$", text, re.M)
    assert len(rows) == len({module for module, _ in rows}), "a module has two rows"
    return {module.removesuffix("/__init__").replace("/", "."): set(re.findall(r"`([\w.]+)`", touches)) & set(MODULES)
            for module, touches in rows}


def test_design_names_every_module_and_what_it_imports():
    table = _design_table()
    assert sorted(table) == MODULES
    for module in MODULES:
        assert table[module] == _imports(module), module


def test_readme_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    named = [f"{m}/" if _path(m).name == "__init__.py" else f" {m.split('.')[-1]}.py" for m in MODULES]
    assert [n for n in named if n not in layout] == []


def test_the_study_never_imports_the_instruments():
    study = [m for m in MODULES if not m.startswith("lab.")]
    assert {m: sorted(i for i in _imports(m) if i.startswith("lab")) for m in study} == {m: [] for m in study}


def test_no_module_is_over_400_lines():
    assert {m: n for m in MODULES if (n := len(_path(m).read_text(encoding="utf-8").splitlines())) > LONGEST} == {}


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "records").rglob("*.md")),
            *sorted((ROOT / "experiments").rglob("*.md"))]


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path):
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)  # links, not code
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    broken = [t for t in targets if not re.match(r"[a-z]+:|#", t)
              and not (doc.parent / t.split("#")[0]).exists()]
    assert broken == []
