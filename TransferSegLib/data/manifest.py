"""Cases from a dataset manifest: an nnU-Net v2 or Medical Segmentation Decathlon ``dataset.json``.

Multi-channel datasets list one file per channel (nnU-Net's ``_0000`` .. ``_000N``,
``images`` lists) or a 4D file per case (Decathlon); their ``channel_names`` /
``modality`` name the channels, so that a case's files are matched to a model's
channels by name (``data.channels``).
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

from TransferSegLib.errors import CaseError
from TransferSegLib.specs import Case
from TransferSegLib.data.label_selection import check_unselected
from TransferSegLib.names import normalize_label_name


def _resolve(root: Path, entry: Any, manifest: Path, where: str) -> str:
    if not isinstance(entry, str) or not entry:
        raise CaseError(f"Dataset manifest '{manifest}', {where}: expected a file path, got {entry!r}.")
    path = Path(entry).expanduser()
    path = path if path.is_absolute() else (root / path)
    if not path.exists():
        raise CaseError(f"Dataset manifest '{manifest}', {where}: '{path}' does not exist.")
    return str(path.resolve())


def _manifest_labels(labels: Any, manifest: Path) -> Dict[int, str]:
    """value → name; nnU-Net's ``"liver": [1, 2]`` merges values 1 and 2 into one class."""
    if not isinstance(labels, dict) or not labels:
        raise CaseError(f"Dataset manifest '{manifest}' has no 'labels' table (value → name or name → value).")
    names: Dict[int, str] = {}
    for key, value in labels.items():
        if str(key).strip().isdigit():  # Decathlon: value → name
            values, name = [int(key)], str(value)
        elif isinstance(value, int) and not isinstance(value, bool):  # nnU-Net v2: name → value
            values, name = [value], str(key)
        elif isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            values, name = list(value), str(key)  # nnU-Net v2 region: here a merge of values
        else:
            raise CaseError(f"Dataset manifest '{manifest}': label '{key}' maps to {value!r}; give a value "
                            f"(\"liver\": 5), a list of values to merge (\"liver\": [1, 2]) or value → name.")
        for number in values:
            if number in names and number != 0 and normalize_label_name(names[number]) != normalize_label_name(name):
                raise CaseError(f"Dataset manifest '{manifest}': value {number} belongs to both '{names[number]}' and "
                                f"'{name}'; overlapping regions are not supported, give each value one class.")
            names[number] = name
    names.pop(0, None)
    return names


def _extra_fields(entry: Dict[str, Any], names: Dict[int, str], root: Path, manifest: Path, where: str) -> Dict[str, Any]:
    extra: Dict[str, Any] = {}
    if entry.get("annotated") is not None:
        annotated = entry["annotated"]
        if isinstance(annotated, str) or not isinstance(annotated, list) or not all(isinstance(n, str) for n in annotated):
            raise CaseError(f"Dataset manifest '{manifest}', {where}: 'annotated' must be a list of class names.")
        known = {normalize_label_name(n) for n in names.values()}
        unknown = [n for n in annotated if normalize_label_name(n) not in known]
        if unknown:
            raise CaseError(f"Dataset manifest '{manifest}', {where}: 'annotated' names {unknown}, which are not "
                            f"among the labels {sorted(names.values())}.")
        extra["annotated"] = list(annotated)
    if entry.get("region"):
        extra["region"] = _resolve(root, entry["region"], manifest, f"{where} 'region'")
    if entry.get("name"):
        extra["name"] = str(entry["name"])
    return extra


def _manifest_channels(data: Dict[str, Any], manifest: Path) -> List[str]:
    """The channel names a manifest declares (nnU-Net ``channel_names``, Decathlon
    ``modality``), in channel order."""
    channels = data.get("channel_names", data.get("modality"))
    if channels is None:
        return []
    try:
        return [str(channels[k]) for k in sorted(channels, key=lambda k: int(k))]
    except (TypeError, ValueError, AttributeError):
        raise CaseError(f"Dataset manifest '{manifest}': 'channel_names'/'modality' must map channel numbers to "
                        f"names, got {channels!r}.") from None


def _channel_files(root: Path, images: Any, manifest: Path, where: str) -> List[str]:
    listed = images if isinstance(images, list) else [images]
    return [_resolve(root, image, manifest, f"{where} 'image'") for image in listed]


def cases_from_manifest(path: str) -> Tuple[List[Case], Dict[str, Any]]:
    """Cases from an nnU-Net v2 or Decathlon ``dataset.json``; returns (cases, extras).

    Decathlon: ``labels`` value → name and ``training: [{image, label}]``.
    nnU-Net v2: ``labels`` name → value, ``file_ending``, ``imagesTr/<id>_0000<ending>``
    with ``labelsTr/<id><ending>`` (or a ``dataset`` object of entries). Entries may
    add ``annotated`` (class names) and ``region`` (a mask path). ``labels`` may name
    only the classes wanted (``{"5": "liver"}``) and merge values (``"liver": [1, 2]``);
    values it does not name are background, or unannotated with the manifest's
    ``"unselected": "unannotated"``. Extras: the manifest's ``name``, ``description``, ``modality``/``channel_names``,
    ``file_ending`` and ``labels`` (class names in value order).
    """
    manifest = Path(path).expanduser()
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseError(f"Cannot read dataset manifest '{manifest}': {exc}") from exc
    except ValueError as exc:
        raise CaseError(f"Dataset manifest '{manifest}' is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CaseError(f"Dataset manifest '{manifest}' must hold a JSON object.")
    names = _manifest_labels(data.get("labels"), manifest)
    policy = check_unselected(data.get("unselected", "background"), f"Dataset manifest '{manifest}': 'unselected'")
    channel_names = _manifest_channels(data, manifest)
    root = manifest.parent
    cases: List[Case] = []
    if data.get("training"):
        entries = data["training"]
        if not isinstance(entries, list):
            raise CaseError(f"Dataset manifest '{manifest}': 'training' must be a list of {{image, label}} entries.")
        for i, entry in enumerate(entries):
            where = f"training entry {i}"
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise CaseError(f"Dataset manifest '{manifest}', {where}: needs 'image' and 'label', got {entry!r}.")
            files = _channel_files(root, entry["image"], manifest, where)
            given = channel_names if len(files) > 1 and len(files) == len(channel_names) else []
            cases.append(Case(image=files, channel_names=given,
                              label=_resolve(root, entry["label"], manifest, f"{where} 'label'"),
                              label_names=dict(names), unselected=policy,
                              **_extra_fields(entry, names, root, manifest, where)))
    elif isinstance(data.get("dataset"), dict):
        for case_id, entry in data["dataset"].items():
            where = f"dataset entry '{case_id}'"
            images = entry.get("images") if isinstance(entry, dict) else None
            if not isinstance(images, list) or not images or not entry.get("label"):
                raise CaseError(f"Dataset manifest '{manifest}', {where}: needs 'images' (one file per channel) "
                                f"and 'label'.")
            extra = _extra_fields(entry, names, root, manifest, where)
            extra.setdefault("name", str(case_id))
            files = _channel_files(root, images, manifest, f"{where} 'images'")
            cases.append(Case(image=files, channel_names=channel_names if len(files) == len(channel_names) > 1 else [],
                              label=_resolve(root, entry["label"], manifest, f"{where} 'label'"),
                              label_names=dict(names), unselected=policy, **extra))
    else:
        ending = data.get("file_ending", ".nii.gz")
        for image in sorted((root / "imagesTr").glob(f"*_0000{ending}")):
            case_id = image.name[: -len(f"_0000{ending}")]
            label = root / "labelsTr" / f"{case_id}{ending}"
            if not label.exists():
                raise CaseError(f"Dataset manifest '{manifest}', case '{case_id}': no labelmap '{label}'.")
            files = [image.with_name(f"{case_id}_{k:04d}{ending}") for k in range(max(1, len(channel_names)))]
            absent = [str(f) for f in files if not f.exists()]
            if absent:
                raise CaseError(f"Dataset manifest '{manifest}' declares {len(files)} channels "
                                f"({', '.join(channel_names)}), but case '{case_id}' lacks {', '.join(absent)}.")
            cases.append(Case(image=[str(f) for f in files], label=str(label), label_names=dict(names), name=case_id,
                              channel_names=channel_names if len(files) > 1 else [],
                              unselected=policy))
    if not cases:
        raise CaseError(f"Dataset manifest '{manifest}' lists no training cases (no 'training' list, and no "
                        f"imagesTr/*_0000{data.get('file_ending', '.nii.gz')} files next to it).")
    expected = data.get("numTraining")
    if isinstance(expected, int) and expected != len(cases):
        raise CaseError(f"Dataset manifest '{manifest}' says numTraining={expected} but lists {len(cases)} cases: "
                        f"correct numTraining or the case list.")
    extras = {k: data[k] for k in ("name", "description", "modality", "channel_names", "file_ending") if k in data}
    extras["labels"] = list(dict.fromkeys(names[v] for v in sorted(names)))
    return cases, extras
