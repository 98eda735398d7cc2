"""A training case as the user picked it in the scene, and the class list shared by all cases.

Plain data (no ``slicer`` import): which segments of which segmentation are annotated
ground truth, whether only the drawn slices are annotated (sparse annotation), and
whether the case is held out for validation, and, for a model that reads several
co-registered images (MR sequences, CT + PET), the volume of each further input
channel. The panel keeps a list of these; the Logic turns them into the engine's
cases when fine-tuning starts.
"""

from dataclasses import dataclass, field
from typing import List, Sequence

from TransferSegLib.names import BACKGROUND, normalize_label_name


@dataclass
class SceneCase:
    """One case: ``segments`` are the annotated (ticked, reviewed) classes; the others are unknown.

    ``sparse``: only the slices on which a ticked segment is drawn are annotated; the
    rest of the volume is unknown, not background. ``validation``: used to measure the
    validation Dice (and stop early), not trained on. ``slices``: how many slices are
    annotated when ``sparse`` (filled in when the case is checked; 0 if unknown).
    ``channels``: the volumes of input channels 2, 3, ... (``volume`` is channel 1, the
    grid every channel must share); ``channel_names`` names every channel, ``volume``'s
    first, as the base model names them (empty for a one-channel case).
    """

    volume: object
    segmentation: object
    segments: List[str] = field(default_factory=list)
    sparse: bool = False
    validation: bool = False
    slices: int = 0
    channels: List[object] = field(default_factory=list)
    channel_names: List[str] = field(default_factory=list)
    checked: tuple = field(default=(), repr=False, compare=False)  # content stamp of the last check

    @property
    def name(self) -> str:
        return self.volume.GetName() if self.volume is not None else "(no volume)"

    @property
    def volumes(self) -> List[object]:
        """Every channel's volume, in channel order (just ``volume`` for a one-channel case)."""
        return [self.volume] + list(self.channels)

    def same_nodes(self, other: "SceneCase") -> bool:
        return self.volume is other.volume and self.segmentation is other.segmentation


def training_labels(cases: Sequence[SceneCase], previous: Sequence[str] = ()) -> List[str]:
    """The target classes (no background) in a fixed order for all cases.

    A class keeps its place from ``previous`` (the labels of the model being
    fine-tuned again), so that label values stay the same from round to round;
    new classes follow in the order the cases name them.
    """
    labels: List[str] = []
    seen = {normalize_label_name(BACKGROUND)}
    for name in list(previous) + [n for case in cases for n in case.segments]:
        key = normalize_label_name(name)
        if key and key not in seen:
            labels.append(str(name).strip())
            seen.add(key)
    return labels
