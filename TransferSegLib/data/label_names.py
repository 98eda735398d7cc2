"""Label names from the files people already have beside their labelmaps.

A plain labelmap (NIfTI, NRRD, MHA) stores numbers only; what ``5`` means lives in
another file. This module reads that file, whichever tool wrote it, into one
table ``value → name`` (and colors where the file has them):

- JSON: ``{"1": "liver"}`` (value → name, Decathlon), ``{"liver": 1}`` (name → value,
  nnU-Net v2), either inside ``"labels"``; or TotalSegmentator's class table
  ``{"total": {"1": "spleen", ...}, "total_mr": {...}}`` (its ``label_names.json`` /
  ``class_map``), where ``FILE:TASK`` picks the task;
- TotalSegmentator's own ``map_to_binary.py`` (the ``class_map`` dictionary, read as a
  literal, never executed), also with ``FILE:TASK``;
- a 3D Slicer color table (``.ctbl`` or ``.txt``: ``value name r g b a`` per line);
- an ITK-SNAP label description file (``value r g b alpha visible mesh "name"``);
- a 3D Slicer segmentation (``.seg.nrrd``): its segment names, numbered as
  TransferSeg flattens the segmentation.
"""

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from TransferSegLib.errors import CaseError

Color = Tuple[float, float, float]

#: An ITK-SNAP label line: index, R G B (0..255), alpha (0..1), visibility, mesh visibility, "name".
_ITKSNAP_LINE = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+"(.*)"\s*$')


@dataclass
class LabelTable:
    """What a label-names file says: value → name (background 0 left out) and value → RGB in 0..1."""

    names: Dict[int, str] = field(default_factory=dict)
    colors: Dict[int, Color] = field(default_factory=dict)
    source: str = ""


def split_task(spec: str) -> Tuple[Path, Optional[str]]:
    """``label_names.json:total`` → (path, "total"); a path that exists as given keeps its colons."""
    path = Path(spec).expanduser()
    if path.exists() or ":" not in spec:
        return path, None
    head, task = spec.rsplit(":", 1)
    if task and "/" not in task and "\\" not in task and Path(head).expanduser().exists():
        return Path(head).expanduser(), task
    return path, None


def _int_key(key: Any) -> Optional[int]:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    text = str(key).strip()
    return int(text) if text.isdigit() else None


def _flat_table(table: Dict[Any, Any], where: str) -> Dict[int, str]:
    names: Dict[int, str] = {}
    for key, value in table.items():
        number = _int_key(key)
        if number is not None and isinstance(value, str):
            names[number] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            names[value] = str(key)
        else:
            raise CaseError(f"{where}: entry {key!r}: {value!r} is neither value → name nor name → value.")
    return names


def _tasks(table: Dict[Any, Any]) -> bool:
    """Whether ``table`` is TotalSegmentator's form: task name → {value: name}."""
    return bool(table) and all(isinstance(v, dict) for v in table.values()) and all(
        _int_key(k) is None for k in table)


def _from_mapping(table: Any, task: Optional[str], where: str) -> Dict[int, str]:
    if isinstance(table, dict) and isinstance(table.get("labels"), dict):
        table = table["labels"]
    if not isinstance(table, dict):
        raise CaseError(f"{where} must hold an object of value → name (or name → value).")
    if _tasks(table):
        if task is None:
            if len(table) != 1:
                raise CaseError(f"{where} holds the class tables of several tasks ({', '.join(map(str, table))}): "
                                f"pick one as FILE:TASK, e.g. '...:{next(iter(table))}'.")
            task = next(iter(table))
        if task not in table:
            raise CaseError(f"{where} has no task '{task}'; its tasks are: {', '.join(map(str, table))}.")
        return _flat_table(table[task], f"{where}, task '{task}'")
    if task is not None:
        raise CaseError(f"{where} is a single table, not one per task: drop ':{task}'.")
    return _flat_table(table, where)


def _class_map_from_python(text: str, where: str) -> Any:
    """The ``class_map = {...}`` literal of a Python file, read with ``ast.literal_eval`` (never run)."""
    try:
        module = ast.parse(text)
    except SyntaxError as exc:
        raise CaseError(f"{where} is not valid Python: {exc}") from exc
    for node in module.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "class_map" for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError as exc:
                raise CaseError(f"{where}: 'class_map' is not a plain dictionary literal: {exc}") from exc
    raise CaseError(f"{where} defines no 'class_map' dictionary (TotalSegmentator's map_to_binary.py does).")


def _color_lines(text: str, where: str) -> LabelTable:
    """A Slicer color table or an ITK-SNAP label description file (told apart line by line)."""
    table = LabelTable()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        snap = _ITKSNAP_LINE.match(line)
        if snap:
            value, name = int(snap.group(1)), snap.group(8)
            rgb = tuple(int(snap.group(i)) / 255.0 for i in (2, 3, 4))
        else:
            parts = line.split()
            if len(parts) < 2 or not parts[0].isdigit():
                raise CaseError(f"{where} line {number} is neither a Slicer color table line ('value name r g b a') "
                                f"nor an ITK-SNAP label line ('value r g b alpha vis mesh \"name\"'): {line!r}")
            value, name = int(parts[0]), parts[1]
            try:
                rgb = tuple(float(c) / 255.0 for c in parts[2:5]) if len(parts) >= 5 else ()
            except ValueError:
                raise CaseError(f"{where} line {number}: colors must be numbers 0..255: {line!r}") from None
        table.names[value] = name
        if rgb:
            table.colors[value] = rgb  # type: ignore[assignment]
    return table


def read_label_table(spec: str) -> LabelTable:
    """Read a label-names file (see the module docstring); ``spec`` may end in ``:TASK``."""
    path, task = split_task(str(spec))
    where = f"Label names file '{path}'"
    if not path.is_file():
        raise CaseError(f"{where} does not exist: check the path (a TotalSegmentator table takes ':TASK', "
                        f"e.g. label_names.json:total).")
    lower = path.name.lower()
    if lower.endswith(".seg.nrrd"):
        from TransferSegLib.data.seg_nrrd import read_segment_names

        table = LabelTable(dict(read_segment_names(str(path))))
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CaseError(f"Cannot read the {where[0].lower()}{where[1:]}: {exc}") from exc
        if lower.endswith(".json"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise CaseError(f"{where} is not valid JSON: {exc}") from exc
            table = LabelTable(_from_mapping(data, task, where))
        elif lower.endswith(".py"):
            table = LabelTable(_from_mapping(_class_map_from_python(text, where), task, where))
        else:
            if task is not None:
                raise CaseError(f"{where} is a color table, not one table per task: drop ':{task}'.")
            table = _color_lines(text, where)
    table.names.pop(0, None)
    table.colors.pop(0, None)
    if not table.names:
        raise CaseError(f"{where} names no label values above 0.")
    table.source = str(spec)
    return table
