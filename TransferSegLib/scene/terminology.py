"""Standard terminology (SNOMED CT codes) for the organs models predict most often.

Slicer stores a segment's meaning in a terminology tag; with it, a predicted
"liver" is the same concept as a hand-drawn one (DICOM SEG export, colors, the
terminology selector). Only names known here get a tag; others keep their name
and color alone. The codes are the ones of Slicer's "General Anatomy" list.
Pure data: no ``slicer`` import, so it can be tested anywhere.
"""

from typing import Dict, Optional, Tuple

from TransferSegLib.names import normalize_label_name

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
ANATOMY = ("123037004", "Anatomical Structure")
ALTERED = ("49755003", "Morphologically Altered Structure")
LEFT = ("7771000", "Left")
RIGHT = ("24028007", "Right")

# normalized name → (category, type, modifier or None)
_Code = Tuple[str, str]
_ENTRIES: Dict[str, Tuple[_Code, _Code, Optional[_Code]]] = {}


def _add(names, category: _Code, kind: _Code, modifier: Optional[_Code] = None) -> None:
    for name in names:
        _ENTRIES[normalize_label_name(name)] = (category, kind, modifier)


_add(["liver"], ANATOMY, ("10200004", "Liver"))
_add(["spleen"], ANATOMY, ("78961009", "Spleen"))
_add(["pancreas"], ANATOMY, ("15776009", "Pancreas"))
_add(["stomach"], ANATOMY, ("69695003", "Stomach"))
_add(["gallbladder", "gall bladder"], ANATOMY, ("28231008", "Gallbladder"))
_add(["aorta"], ANATOMY, ("15825003", "Aorta"))
_add(["heart"], ANATOMY, ("80891009", "Heart"))
_add(["brain"], ANATOMY, ("12738006", "Brain"))
_add(["esophagus", "oesophagus"], ANATOMY, ("32849002", "Esophagus"))
_add(["duodenum"], ANATOMY, ("38848004", "Duodenum"))
_add(["colon"], ANATOMY, ("71854001", "Colon"))
_add(["small bowel", "small intestine"], ANATOMY, ("30315005", "Small Intestine"))
_add(["trachea"], ANATOMY, ("44567001", "Trachea"))
_add(["spinal cord"], ANATOMY, ("2748008", "Spinal cord"))
_add(["prostate"], ANATOMY, ("41216001", "Prostate"))
_add(["sternum"], ANATOMY, ("56873002", "Sternum"))
_add(["skull"], ANATOMY, ("89546000", "Skull"))
_add(["ribs", "rib"], ANATOMY, ("113197003", "Rib"))
_add(["kidney"], ANATOMY, ("64033007", "Kidney"))
_add(["kidney left", "left kidney"], ANATOMY, ("64033007", "Kidney"), LEFT)
_add(["kidney right", "right kidney"], ANATOMY, ("64033007", "Kidney"), RIGHT)
_add(["lung"], ANATOMY, ("39607008", "Lung"))
_add(["lung left", "left lung"], ANATOMY, ("39607008", "Lung"), LEFT)
_add(["lung right", "right lung"], ANATOMY, ("39607008", "Lung"), RIGHT)
_add(["adrenal gland left", "left adrenal gland"], ANATOMY, ("23451007", "Adrenal gland"), LEFT)
_add(["adrenal gland right", "right adrenal gland"], ANATOMY, ("23451007", "Adrenal gland"), RIGHT)
_add(["tumor", "tumour", "lesion", "mass", "liver tumor", "liver tumour", "liver lesion"],
     ALTERED, ("4147007", "Mass"))


def _code(code: Optional[_Code]) -> str:
    return f"SCT^{code[0]}^{code[1]}" if code else "^^"


def terminology_entry(name: str) -> Optional[str]:
    """The serialized terminology entry Slicer stores on a segment, or None if unknown."""
    entry = _ENTRIES.get(normalize_label_name(name))
    if entry is None:
        return None
    category, kind, modifier = entry
    return "~".join([CONTEXT, _code(category), _code(kind), _code(modifier), ANATOMIC_CONTEXT, "^^", "^^"])
