"""The real sample cases shipped under Resources/SampleData, as ``Case`` objects.

Used by the demo, the tests, the experiments and the default model's recipe, so
that all of them read the same files the same way.
"""

import json
from pathlib import Path
from typing import Dict

from TransferSegLib.paths import resources_dir
from TransferSegLib.specs import Case
from TransferSegLib.errors import CaseError


def sample_dir() -> Path:
    return resources_dir() / "SampleData"


def totalsegmentator_names(task: str = "total") -> Dict[int, str]:
    """Label value → name of TotalSegmentator's labelmaps ('total' for CT, 'total_mr' for MR)."""
    path = sample_dir() / "TotalSegmentator" / "label_names.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8"))[task]
    except (OSError, KeyError, ValueError) as exc:
        raise CaseError(f"Cannot read TotalSegmentator label names from '{path}': {exc}") from exc
    return {int(k): str(v) for k, v in table.items()}


def sample_cases() -> Dict[str, Case]:
    """The shipped cases by short name (different patients each)."""
    ts = sample_dir() / "TotalSegmentator"
    slicerio = sample_dir() / "SlicerIO"
    ct_names = totalsegmentator_names("total")
    cases = {
        "ts_ct": Case(image=str(ts / "example_ct_sm.nii.gz"), label=str(ts / "example_seg.nii.gz"),
                      label_names=ct_names, name="ts_ct"),
        "ts_dicom": Case(image=str(ts / "example_ct_dicom"), label=str(ts / "example_seg_dicom.nii.gz"),
                         label_names=ct_names, name="ts_dicom"),
        "ts_mr": Case(image=str(ts / "example_mr_sm.nii.gz"), label=str(ts / "example_seg_mr.nii.gz"),
                      label_names=totalsegmentator_names("total_mr"), name="ts_mr"),
        "chest": Case(image=str(slicerio / "CTChest4.nrrd"), label=str(slicerio / "Segmentation.seg.nrrd"),
                      label_names={}, name="chest"),
    }
    missing = [c.image for c in cases.values() if not Path(c.image).exists()]
    if missing:
        raise CaseError(f"Shipped sample data is missing: {missing}. Reinstall TransferSeg or check Resources/SampleData.")
    return cases


def restrict(case: Case, names) -> Case:
    """A copy of ``case`` that annotates only ``names`` (partial labels)."""
    return Case(image=case.image, label=case.label, label_names=dict(case.label_names),
                annotated=list(names), region=case.region, name=case.name)


#: The shipped default base model's partial labels: the TotalSegmentator example CT
#: annotates abdominal structures, the chest CT lungs and bones; the liver is withheld
#: everywhere, and the DICOM CT (the demo's held-out patient) is not used at all.
DEFAULT_PRETRAINING_LABELS = {
    "ts_ct": ["spleen", "kidney_right", "kidney_left", "gallbladder", "stomach", "pancreas", "small_bowel",
              "duodenum", "colon", "aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein", "vertebrae_T12",
              "vertebrae_L1", "vertebrae_L2", "spinal_cord", "autochthon_left", "autochthon_right", "iliopsoas_left",
              "iliopsoas_right", "costal_cartilages", "lung_lower_lobe_left", "lung_lower_lobe_right"],
    "chest": ["right lung", "left lung", "thoracic vertebral column", "lumbar vertebral column", "ribs"],
}


def default_pretraining_cases():
    """The partially labelled collection the shipped default base model was trained on."""
    cases = sample_cases()
    return [restrict(cases[name], labels) for name, labels in DEFAULT_PRETRAINING_LABELS.items()]
