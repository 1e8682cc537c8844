"""The layer rule of docs/architecture.md, checked on the source without running it.

Every module under src/pixelwise is parsed with `ast`; each of its imports of another pixelwise
module (at the top, inside functions, under `if TYPE_CHECKING:`) must reach the importer's own
layer or one listed before it in the doc's ```layers block. The table is read from the doc, so
the doc and this test cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "pixelwise"
DOC = ROOT / "docs" / "architecture.md"


@dataclass(frozen=True)
class Import:
    """One import of a pixelwise module: ``importer`` line ``line`` reaches ``target`` (paths
    relative to src/pixelwise)."""

    importer: str
    line: int
    target: str


def doc_block(info: str) -> list[str]:
    """The lines of the doc's fenced block ```info, without blanks."""
    found = re.search(rf"^```{info}\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)
    assert found, f"docs/architecture.md must hold a ```{info} block"
    return [line.strip() for line in found.group(1).splitlines() if line.strip()]


def layer_table() -> dict[str, tuple[int, str]]:
    """``{path or folder/: (rank, layer name)}`` from the ```layers block, lowest layer first."""
    table = {}
    for rank, line in enumerate(doc_block("layers")):
        name, _, paths = line.partition(":")
        for path in paths.split():
            table[path] = (rank, name.strip())
    return table


def allowed_exceptions() -> set[tuple[str, str]]:
    """``{(importer, target)}`` from the ```layer-exceptions block (``a.py -> b.py   why``)."""
    pairs = set()
    for line in doc_block("layer-exceptions"):
        importer, _, rest = line.partition("->")
        pairs.add((importer.strip(), rest.split()[0]))
    return pairs


def modules() -> list[str]:
    return sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py"))


def layer_of(module: str, table: dict[str, tuple[int, str]]) -> tuple[int, str] | None:
    """The layer of a module path: its own entry, else that of the innermost folder holding it."""
    if module in table:
        return table[module]
    folders = [key for key in table if key.endswith("/") and module.startswith(key)]
    return table[max(folders, key=len)] if folders else None


def module_file(dotted: str) -> str | None:
    """The path of pixelwise module ``dotted`` (``pixelwise.models`` -> ``models/__init__.py``),
    or None when it is not one (another package, or a name inside a module)."""
    first, *rest = dotted.split(".")
    if first != "pixelwise":
        return None
    base = PACKAGE.joinpath(*rest)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate.relative_to(PACKAGE).as_posix()
    return None


def imports_of(module: str) -> list[Import]:
    """Every import of a pixelwise module in ``module``. ``from P import name`` reaches
    ``P.name`` when that is a module, else ``P`` itself (the name is defined there)."""
    package = ["pixelwise", *Path(module).parent.parts]
    found = []
    for node in ast.walk(ast.parse((PACKAGE / module).read_text(), module)):
        if isinstance(node, ast.Import):
            targets = [module_file(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from ..x import y` in data/io.py: level 2 climbs from pixelwise.data to pixelwise
            anchor = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [module_file(f"{base}.{alias.name}") or module_file(base)
                       for alias in node.names]
        else:
            continue
        found += [Import(module, node.lineno, target)
                  for target in dict.fromkeys(targets) if target]
    return found


def upward_imports() -> list[Import]:
    """The imports that reach a layer listed after the importer's (modules without a layer are
    the business of test_every_module_has_a_layer)."""
    table = layer_table()
    found = []
    for module in modules():
        for item in imports_of(module):
            importer, target = layer_of(item.importer, table), layer_of(item.target, table)
            if importer and target and target[0] > importer[0]:
                found.append(item)
    return found


def test_every_module_has_a_layer():
    table = layer_table()
    assert [module for module in modules() if layer_of(module, table) is None] == []


def test_the_layer_table_names_only_existing_modules():
    assert [path for path in layer_table() if not (PACKAGE / path).exists()] == []


def test_no_module_imports_a_higher_layer():
    table = layer_table()
    allowed = allowed_exceptions()
    climbing = [f"{item.importer}:{item.line} ({layer_of(item.importer, table)[1]}) imports "
                f"{item.target} ({layer_of(item.target, table)[1]})"
                for item in upward_imports() if (item.importer, item.target) not in allowed]
    assert climbing == [], (
        "these imports climb the layers of docs/architecture.md; move the shared piece down, "
        "or (for a stop-gap) list the pair in its ```layer-exceptions block:\n"
        + "\n".join(climbing))


def test_every_allowed_exception_still_occurs():
    occurring = {(item.importer, item.target) for item in upward_imports()}
    stale = sorted(allowed_exceptions() - occurring)
    assert stale == [], f"delete these lines of docs/architecture.md's ```layer-exceptions: {stale}"


@pytest.mark.parametrize(("source", "expected"), [
    ("from pixelwise.models import build", "models/__init__.py"),
    ("from pixelwise import checkpoint", "checkpoint.py"),
    ("from pixelwise import __version__", "__init__.py"),
    ("import pixelwise.engine.train", "engine/train.py"),
    ("from . import io", "data/io.py"),
    ("from .io import read_image", "data/io.py"),
    ("import numpy", None),
])
def test_imports_are_resolved_to_the_module_they_load(tmp_path, monkeypatch, source, expected):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "probe.py").write_text(f"def later():\n    {source}\n")  # function-local
    monkeypatch.setattr("test_architecture.PACKAGE", tmp_path)
    for name in ("__init__.py", "checkpoint.py", "models/__init__.py", "engine/train.py",
                 "data/io.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).touch()
    assert [item.target for item in imports_of("data/probe.py")] == ([expected] if expected else [])
