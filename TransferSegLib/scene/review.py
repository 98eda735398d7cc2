"""Review: a corrected prediction becomes a training case, with only the reviewed classes as ground truth.

A prediction holds every class the model knows, but the user may have checked and
corrected only some of them. Counting the others as ground truth would teach the
model its own mistakes, so the classes the user ticks as reviewed are the case's
annotated classes and the rest stay unknown (partial labels). The corrected
segmentation is picked explicitly: the panel offers the latest prediction, never a
segmentation the user drew by hand.
"""

from typing import List, Optional, Sequence

from TransferSegLib.errors import CaseError
from TransferSegLib.names import normalize_label_name
from TransferSegLib.scene.cases import SceneCase
from TransferSegLib.scene.channels import remembered_channels
from TransferSegLib.scene.export import check_case, check_pair
from TransferSegLib.scene.segmentations import find_segment_id, present_segments, segment_names

PREDICTION_ATTRIBUTE = "TransferSeg.PredictedBy"  # set on segmentation nodes the panel created from a model


def source_volume(segmentation):
    """The volume a segmentation was predicted or drawn on (its reference geometry node)."""
    return segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())


def non_empty_segments(segmentation, volume) -> List[str]:
    """Names of the segments that have voxels on ``volume`` (one read per layer)."""
    names = segment_names(segmentation)
    ids = [find_segment_id(segmentation, n) for n in names]
    present = set(present_segments(segmentation, volume, [i for i in ids if i]))
    return [n for n, segment_id in zip(names, ids) if segment_id in present]


def is_prediction(segmentation) -> bool:
    return bool(segmentation is not None and segmentation.GetAttribute(PREDICTION_ATTRIBUTE))


def case_from_segmentation(segmentation, reviewed: Optional[Sequence[str]] = None, volume=None,
                           sparse: bool = False) -> SceneCase:
    """A training case from a corrected segmentation: the ``reviewed`` segments are its ground truth.

    ``reviewed`` must name the segments the user checked; ``None`` is accepted only
    for a segmentation that is not a model's prediction (then every non-empty segment
    counts, as for a hand-drawn case). The volume defaults to the segmentation's source; a
    prediction of a multi-channel model keeps the channel volumes it was predicted from.
    """
    if segmentation is None:
        raise CaseError("Pick the corrected segmentation to add as a training case.")
    volume = volume or source_volume(segmentation)
    if volume is None:
        raise CaseError(
            f"The segmentation '{segmentation.GetName()}' does not say which volume it belongs to. "
            f"Add it with 'Add current case' after picking its volume."
        )
    check_pair(volume, segmentation)
    if reviewed is None:
        if is_prediction(segmentation):
            raise CaseError(
                f"'{segmentation.GetName()}' is a prediction: tick the segments you reviewed and corrected. "
                f"Only those become ground truth; the others stay unknown."
            )
        reviewed = non_empty_segments(segmentation, volume)
    names = segment_names(segmentation)
    known = {normalize_label_name(n): n for n in names}
    unknown = [n for n in reviewed if normalize_label_name(n) not in known]
    if unknown:
        raise CaseError(f"'{segmentation.GetName()}' has no segment {', '.join(repr(n) for n in unknown)} "
                        f"(it has: {', '.join(names) or 'none'}).")
    chosen = [known[normalize_label_name(n)] for n in reviewed]
    if not chosen:
        raise CaseError(f"No segment of '{segmentation.GetName()}' is ticked as reviewed: tick the classes you "
                        f"checked and corrected.")
    channels, names = remembered_channels(segmentation) if volume is source_volume(segmentation) else ([], [])
    case = SceneCase(volume=volume, segmentation=segmentation, segments=chosen, sparse=sparse, channels=channels,
                     channel_names=names)
    check_case(case)
    return case
