"""``--labels``: which classes to learn (or score), and which label values they are.

The forms a user types, for a labelmap that holds many classes (TotalSegmentator
writes 117 values into one file, LiTS writes liver = 1 and tumour = 2):

- ``liver``: a class found by its name in the labelmap's names (a ``.seg.nrrd``, a
  manifest's ``labels``, a ``--label-names`` file). With no names anywhere, bare
  names stand for the values 1..N in the order given (``liver,spleen``: 1 and 2);
- ``liver=5``: the class is the voxels of value 5;
- ``liver=5,spleen=1``: several classes;
- ``liver=1+2``: one class merging several values (liver + tumour into liver); the
  parts may be names known to the labelmap (``liver=liver+liver_tumor``).

Values nobody selected are *background* by default (``--unselected background``),
or *unannotated* (``--unselected unannotated``): those voxels then carry no label
at all, and training neither rewards nor punishes any prediction there (the
engine's partial-label region). Bare names numbering values 1..N refuse any other
value, since a labelmap with more classes than names is most often the wrong file.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

from TransferSegLib.errors import CaseError
from TransferSegLib.names import BACKGROUND, normalize_label_name

#: What becomes of labelled voxels whose value no selected class takes.
UNSELECTED_CHOICES = ("background", "unannotated")
#: Bare names numbering values 1..N: another value in the labelmap is refused.
REFUSE = "refuse"

Source = Union[int, str]


@dataclass(frozen=True)
class SelectedClass:
    """One target class: its name and the labelmap values (or labelmap names) it is made of.

    ``sources`` empty: the labelmap's own class of that name.
    """

    name: str
    sources: Tuple[Source, ...] = ()


@dataclass
class LabelSelection:
    """The parsed ``--labels`` text."""

    classes: List[SelectedClass] = field(default_factory=list)

    @property
    def names(self) -> List[str]:
        """Target class names in the order given, each once."""
        seen, out = set(), []
        for item in self.classes:
            key = normalize_label_name(item.name)
            if key not in seen:
                seen.add(key)
                out.append(item.name)
        return out

    @property
    def by_name_only(self) -> bool:
        """Every class is a bare name (the form that can mean values 1..N)."""
        return all(not c.sources for c in self.classes)

    def __bool__(self) -> bool:
        return bool(self.classes)

    def resolve(self, table: Dict[int, str], where: str) -> Dict[int, str]:
        """Label value → target class name, for a labelmap whose own names are ``table``.

        ``table`` empty and only bare names: values 1..N in order. Raises ``CaseError``
        naming ``where`` (the labelmap) when a name is not in its table or a value is
        claimed twice.
        """
        if not table and self.by_name_only:
            return {i: name for i, name in enumerate(self.names, start=1)}
        by_name: Dict[str, List[int]] = {}
        for value, name in table.items():
            by_name.setdefault(normalize_label_name(name), []).append(int(value))
        mapping: Dict[int, str] = {}
        for item in self.classes:
            for part in item.sources or (item.name,):
                if isinstance(part, int):
                    values = [part]
                else:
                    values = by_name.get(normalize_label_name(part), [])
                    if not values:
                        raise CaseError(_unknown_name(part, item.name, table, where))
                for value in values:
                    previous = mapping.get(value)
                    if previous is not None and normalize_label_name(previous) != normalize_label_name(item.name):
                        raise CaseError(f"--labels gives value {value} of {where} to both '{previous}' and "
                                        f"'{item.name}': each value can belong to one class only.")
                    mapping[value] = item.name
        return mapping


def _unknown_name(part: str, target: str, table: Dict[int, str], where: str) -> str:
    if not table:
        return (f"--labels: {where} carries no label names, so '{part}' cannot be found by name. Give its value "
                f"('{target}=VALUE', e.g. '{target}=5'), or a names file with --label-names (a Slicer color table, "
                f"an ITK-SNAP label file, TotalSegmentator's label_names.json:total, a .seg.nrrd).")
    known = ", ".join(f"{v}={n}" for v, n in sorted(table.items())[:12]) + (", ..." if len(table) > 12 else "")
    close = [n for n in table.values() if normalize_label_name(part) in normalize_label_name(n)][:5]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"--labels: {where} has no label named '{part}' (it has {known}).{hint}"


def _source(text: str, item: str) -> Source:
    text = text.strip()
    if not text:
        raise CaseError(f"--labels item '{item}': an empty value; write NAME=VALUE or NAME=VALUE+VALUE.")
    if text.isdigit():
        value = int(text)
        if value == 0:
            raise CaseError(f"--labels item '{item}': value 0 is the background and cannot be a class.")
        return value
    if text.lstrip("-").isdigit():
        raise CaseError(f"--labels item '{item}': label values are whole numbers 1, 2, ...; got {text}.")
    return text


def parse_labels(text: Union[str, Sequence[str], None]) -> LabelSelection:
    """Parse ``liver``, ``liver=5``, ``liver=5,spleen=1``, ``liver=1+2`` (a list of items is joined by commas)."""
    if text is None:
        return LabelSelection()
    if not isinstance(text, str):
        text = ",".join(str(t) for t in text)
    classes: List[SelectedClass] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, rest = item.partition("=")
        name = name.strip()
        if not name:
            raise CaseError(f"--labels item '{item}' has no class name: write NAME or NAME=VALUE.")
        if normalize_label_name(name) == BACKGROUND:
            raise CaseError("--labels: 'background' is always the class of value 0; list only the organs to learn.")
        if name.isdigit():
            raise CaseError(f"--labels item '{item}': name the class, e.g. 'liver={name}' (a bare number is not a name).")
        sources: Tuple[Source, ...] = tuple(_source(p, item) for p in rest.split("+")) if sep else ()
        classes.append(SelectedClass(name, sources))
    return LabelSelection(classes)


def check_unselected(value: Optional[str], where: str = "--unselected") -> Optional[str]:
    """``background`` / ``unannotated`` (or None: the default of the input form)."""
    if value is None or value in UNSELECTED_CHOICES or value == REFUSE:
        return value
    raise CaseError(f"{where} is '{value}': choose {' or '.join(UNSELECTED_CHOICES)}.")
