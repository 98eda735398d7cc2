"""The Slicer scene bridge: volume + segmentation nodes ⇄ case files, predictions → new nodes.

The one package of TransferSegLib that imports ``slicer``. It reads the user's nodes
and never changes them: training cases are written as files (exact geometry, only
the segments the user chose, one label list shared by every case), and a prediction
always becomes a new segmentation node next to its volume. Every refusal names the
node and says what to do. This file only re-exports; the code lives in:

- ``cases``: the panel's case (plain data) and the shared label list,
- ``segmentations``: segments as arrays on a volume's grid (one read per layer),
- ``export``: checking a case and writing its files (``export_cases``),
- ``imports``: labelmaps and predictions as new segmentation nodes,
- ``review``: a corrected prediction as a case with only the reviewed classes,
- ``channels``: one volume per input channel of a multi-channel model (checked on one grid),
- ``geometry``, ``terminology``, ``plot``, ``runs``, ``process``, ``models``, ``logic``...
"""

from TransferSegLib.scene.cases import SceneCase, training_labels
from TransferSegLib.scene.export import (
    CaseVoxels, case_voxels, check_case, check_pair, describe_slices, export_case, export_cases,
)
from TransferSegLib.scene.imports import import_labelmap, import_prediction, load_case_into_scene
from TransferSegLib.scene.review import case_from_segmentation, non_empty_segments, source_volume
from TransferSegLib.scene.segmentations import find_segment_id, labelmap_array, segment_mask, segment_names

__all__ = [
    "SceneCase", "training_labels", "CaseVoxels", "case_voxels", "check_case", "check_pair", "describe_slices",
    "export_case", "export_cases", "import_labelmap", "import_prediction", "load_case_into_scene",
    "case_from_segmentation", "non_empty_segments", "source_volume", "find_segment_id", "labelmap_array",
    "segment_mask", "segment_names",
]
