"""Standard terminology (SNOMED CT codes) for the class names TransferSeg's label tables use.

Slicer stores a segment's meaning in a terminology tag; with it, a predicted "liver"
is the same concept as a hand-drawn one (DICOM SEG export, colors, the terminology
selector). Every class name of the shipped label tables (the sample data's
TotalSegmentator tables, the catalog, the default model) gets an entry: the organ's
concept, with a left/right modifier where the name says so. Numbered structures map
to their family (``rib_left_3`` → rib, left; ``vertebrae_T7`` → thoracic vertebra), and
a few names to the nearest concept the codes have (``portal_vein_and_splenic_vein`` →
portal vein, ``hip`` → hip bone, tumor sub-regions → mass). Names not known here keep
their name and color alone. Pure data: no ``slicer`` import, so it can be tested anywhere.
"""

import re
from typing import Dict, Optional, Tuple

from TransferSegLib.names import normalize_label_name

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
ANATOMY = ("123037004", "Anatomical Structure")
ALTERED = ("49755003", "Morphologically Altered Structure")
LEFT = ("7771000", "Left")
RIGHT = ("24028007", "Right")

_Code = Tuple[str, str]
_ENTRIES: Dict[str, Tuple[_Code, _Code]] = {}  # normalized base name (no side) → (category, type)


def _add(names, kind: _Code, category: _Code = ANATOMY) -> None:
    for name in names:
        _ENTRIES[normalize_label_name(name)] = (category, kind)


# Abdomen and pelvis
_add(["liver"], ("10200004", "Liver"))
_add(["spleen"], ("78961009", "Spleen"))
_add(["pancreas"], ("15776009", "Pancreas"))
_add(["stomach"], ("69695003", "Stomach"))
_add(["gallbladder", "gall bladder"], ("28231008", "Gallbladder"))
_add(["esophagus", "oesophagus"], ("32849002", "Esophagus"))
_add(["duodenum"], ("38848004", "Duodenum"))
_add(["colon"], ("71854001", "Colon"))
_add(["small bowel", "small intestine"], ("30315005", "Small Intestine"))
_add(["kidney"], ("64033007", "Kidney"))
_add(["adrenal gland"], ("23451007", "Adrenal gland"))
_add(["urinary bladder", "bladder"], ("89837001", "Urinary bladder"))
_add(["prostate"], ("41216001", "Prostate"))
# Chest and neck
_add(["lung"], ("39607008", "Lung"))
_add(["lung upper lobe"], ("45653009", "Upper lobe of lung"))
_add(["lung middle lobe"], ("72481006", "Middle lobe of right lung"))
_add(["lung lower lobe"], ("90572001", "Lower lobe of lung"))
_add(["trachea"], ("44567001", "Trachea"))
_add(["thyroid gland", "thyroid"], ("69748006", "Thyroid gland"))
_add(["heart"], ("80891009", "Heart"))
_add(["heart atrium"], ("59652004", "Atrium of heart"))
_add(["heart ventricle"], ("21814001", "Cardiac ventricle"))
_add(["heart myocardium", "myocardium"], ("74281007", "Myocardium"))
_add(["atrial appendage"], ("33626005", "Left auricular appendage"))
# Vessels
_add(["aorta"], ("15825003", "Aorta"))
_add(["inferior vena cava"], ("64131007", "Inferior vena cava"))
_add(["superior vena cava"], ("48345005", "Superior vena cava"))
_add(["portal vein and splenic vein", "portal vein"], ("32764006", "Portal vein"))
_add(["pulmonary artery"], ("81040000", "Pulmonary artery"))
_add(["pulmonary vein"], ("122972007", "Pulmonary vein"))
_add(["brachiocephalic trunk"], ("12691009", "Brachiocephalic trunk"))
_add(["brachiocephalic vein"], ("8887007", "Brachiocephalic vein"))
_add(["subclavian artery"], ("36765005", "Subclavian artery"))
_add(["common carotid artery"], ("32062004", "Common carotid artery"))
_add(["iliac artery"], ("73634005", "Common iliac artery"))
_add(["iliac vena", "iliac vein"], ("46027005", "Common iliac vein"))
# Bones
_add(["skull"], ("89546000", "Skull"))
_add(["face"], ("89545001", "Face"))
_add(["sternum"], ("56873002", "Sternum"))
_add(["rib", "ribs"], ("113197003", "Rib"))
_add(["costal cartilages", "costal cartilage"], ("50016007", "Costal cartilage"))
_add(["clavicula", "clavicle"], ("51299004", "Clavicle"))
_add(["scapula"], ("79601000", "Scapula"))
_add(["humerus"], ("85050009", "Humerus"))
_add(["femur"], ("71341001", "Femur"))
_add(["hip"], ("29836001", "Hip"))
_add(["sacrum", "vertebrae s1"], ("54735007", "Sacrum"))
_add(["vertebrae", "vertebral column"], ("421060004", "Vertebral column"))
_add(["cervical vertebra", "cervical vertebral column"], ("122494005", "Cervical spine"))
_add(["thoracic vertebra", "thoracic vertebral column"], ("122495006", "Thoracic spine"))
_add(["lumbar vertebra", "lumbar vertebral column"], ("122496007", "Lumbar spine"))
_add(["intervertebral discs", "intervertebral disc"], ("360499006", "Intervertebral disc"))
# Nervous system and muscles
_add(["brain"], ("12738006", "Brain"))
_add(["spinal cord"], ("2748008", "Spinal cord"))
_add(["gluteus maximus"], ("181674001", "Gluteus maximus muscle"))
_add(["gluteus medius"], ("78333006", "Gluteus medius muscle"))
_add(["gluteus minimus"], ("75297007", "Gluteus minimus muscle"))
_add(["iliopsoas"], ("68455001", "Iliopsoas muscle"))
_add(["autochthon", "erector spinae"], ("44947003", "Erector spinae muscle"))
# Findings
_add(["tumor", "tumour", "lesion", "mass", "liver tumor", "liver tumour", "liver lesion", "enhancing tumor",
      "tumor core", "whole tumor"], ("4147007", "Mass"), ALTERED)
_add(["kidney cyst", "cyst"], ("367643001", "Cyst"), ALTERED)

_VERTEBRA = {"c": "cervical_vertebra", "t": "thoracic_vertebra", "l": "lumbar_vertebra", "s": "sacrum"}


def _base_and_side(name: str) -> Tuple[str, Optional[_Code]]:
    """'rib_left_3' → ('rib', LEFT); 'vertebrae_t7' → ('thoracic_vertebra', None)."""
    key = normalize_label_name(name)
    vertebra = re.fullmatch(r"vertebrae?_([ctls])\d+", key)
    if vertebra:
        return _VERTEBRA[vertebra.group(1)], None
    parts = key.split("_")
    side = LEFT if "left" in parts else RIGHT if "right" in parts else None
    base = "_".join(p for p in parts if p not in ("left", "right") and not p.isdigit())
    return base, side


def _code(code: Optional[_Code]) -> str:
    return f"SCT^{code[0]}^{code[1]}" if code else "^^"


def terminology_entry(name: str) -> Optional[str]:
    """The serialized terminology entry Slicer stores on a segment, or None if unknown."""
    base, side = _base_and_side(name)
    entry = _ENTRIES.get(base) or _ENTRIES.get(normalize_label_name(name))
    if entry is None:
        return None
    category, kind = entry
    return "~".join([CONTEXT, _code(category), _code(kind), _code(side), ANATOMIC_CONTEXT, "^^", "^^"])
