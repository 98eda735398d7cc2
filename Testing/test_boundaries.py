"""The engine stays usable without Slicer: only the scene bridge talks to ``slicer``.

Checked on the source (imports anywhere in a file, lazy ones inside functions
included), so a stray ``import slicer`` in the engine fails here rather than in a
user's terminal.
"""
import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "TransferSegLib"
SLICER_ONLY = {"slicer", "vtk", "mrml", "vtkSegmentationCorePython"}
QT = {"qt", "ctk", "PythonQt", "PySide2", "PySide6", "PyQt5", "PyQt6"}


def _imported_roots(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


ENGINE_FILES = sorted(p for p in LIB.rglob("*.py") if "scene" not in p.relative_to(LIB).parts)


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: str(p.relative_to(LIB)))
def test_engine_modules_import_neither_slicer_nor_qt(path):
    bad = [(name, line) for name, line in _imported_roots(path) if name in SLICER_ONLY | QT]
    assert not bad, f"{path.relative_to(LIB.parent)} imports {bad}: only TransferSegLib/scene/ may talk to Slicer"


@pytest.mark.parametrize("path", sorted((LIB / "scene").glob("*.py")), ids=lambda p: p.name)
def test_the_scene_bridge_never_imports_qt(path):
    bad = [(name, line) for name, line in _imported_roots(path) if name in QT]
    assert not bad, f"{path.relative_to(LIB.parent)} imports {bad}: the bridge is polled from the widget, not Qt-bound"


def test_the_check_sees_the_bridge():
    # Guards the test itself: if the bridge moved, the engine list would silently include it.
    assert (LIB / "scene" / "__init__.py").is_file()
    assert any(name == "slicer" for path in (LIB / "scene").glob("*.py") for name, _ in _imported_roots(path))
    assert len(ENGINE_FILES) > 30
