"""Several volumes as one image: the input channels of a multi-channel model, from scene nodes.

A model that reads several co-registered images (BraTS: T1c, T1, T2, FLAIR) gets
one volume node per channel. The engine stacks the channels voxel by voxel, so every
channel's volume must lie on channel 1's grid (the grid the segmentation is drawn on
and the prediction is put back onto); one that does not is refused by name, never
resampled silently. Channel names come from the model (``model_channels``) and travel
with the files, so the engine matches them by name (``data.channels.order_channels``).
"""

import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from TransferSegLib.data.grid import grid_problems
from TransferSegLib.errors import CaseError
from TransferSegLib.scene.geometry import check_scalar, check_untransformed, volume_grid, write_volume_nrrd


CHANNEL_ROLE = "TransferSegChannel"  # node references of a prediction to its channels 2, 3... (saved with the scene)
CHANNEL_NAMES = "TransferSeg.ChannelNames"


def channel_labels(names: Sequence[str], count: int) -> List[str]:
    """``count`` channel names: the model's own where it names them all, else 'channel 1', 'channel 2'..."""
    names = [str(n) for n in names]
    if count <= 1:
        return names[:1] if len(names) == 1 else []
    return names if len(names) == count else [f"channel {i}" for i in range(1, count + 1)]


def _described(names: Sequence[str], index: int) -> str:
    return f" ({names[index]})" if index < len(names) else ""


def check_channels(volume, channels: Sequence, names: Sequence[str] = (), what: str = "the case") -> None:
    """Refuse missing, non-scalar, transformed channel volumes and any not on ``volume``'s grid.

    ``volume`` is channel 1, ``channels`` the others in order; ``names`` name all of
    them (``volume``'s first) when the model names its channels.
    """
    if not channels:
        return
    if names and len(names) != len(channels) + 1:
        raise CaseError(f"{what}: {len(names)} channel names ({', '.join(names)}) for {len(channels) + 1} volumes.")
    first = volume_grid(volume)
    for index, node in enumerate(channels, start=1):
        if node is None:
            raise CaseError(f"{what}: no volume is picked for channel {index + 1}{_described(names, index)}. Pick "
                            f"the volume of that channel (co-registered with '{volume.GetName()}').")
        check_scalar(node)
        check_untransformed(node)
        problems = grid_problems(volume_grid(node), first)
        if problems:
            raise CaseError(
                f"The channel volume '{node.GetName()}'{_described(names, index)} is not on the grid of "
                f"'{volume.GetName()}'{_described(names, 0)}, channel 1 ({'; '.join(problems)}). The channels are "
                f"read voxel by voxel, so they must be co-registered on one grid: resample '{node.GetName()}' onto "
                f"'{volume.GetName()}' (e.g. the 'Resample Scalar/Vector/DWI Volume' module with it as the "
                f"reference volume), then pick the resampled volume.")


def write_channel_files(volumes: Sequence, folder: Path, stem: str) -> List[str]:
    """Each channel's volume as ``<stem>_<k>.nrrd`` (k = 0000, 0001...), straight from the node."""
    paths = []
    for index, node in enumerate(volumes):
        path = Path(folder) / f"{stem}_{index:04d}.nrrd"
        write_volume_nrrd(node, path)
        paths.append(str(path))
    return paths


def image_argument(paths: Sequence[str], names: Sequence[str]) -> str:
    """The ``--image`` value of ``transferseg predict``: ``T1c=a,T1=b`` (names matched by name) or ``a,b``."""
    for path in paths:
        if "," in str(path):
            raise CaseError(f"The file name '{path}' holds a comma, which separates channels: use a TransferSeg "
                            f"folder whose path has none.")
    if names and len(names) == len(paths):
        return ",".join(f"{name}={path}" for name, path in zip(names, paths))
    return ",".join(str(p) for p in paths)


def check_channel_count(model: str, names: Sequence[str], count: Optional[int], given: int, what: str) -> None:
    """Refuse ``given`` volumes for a model of ``count`` input channels (None: any), naming what to pick."""
    if count is None or given == count:
        return
    labels = channel_labels(names, count)
    raise CaseError(
        f"The model '{model}' reads {count} channel(s) ({', '.join(labels) or 'one image'}); {what} gives "
        f"{given}. Pick one volume per channel" + (" (the channel selectors appear under the volume when the "
                                                   "model is selected)" if count > 1 else "") + ".")


def remember_channels(segmentation, channels: Sequence, names: Sequence[str]) -> None:
    """Keep on a prediction the channel volumes it was predicted from, so that its correction is a
    case of the same channels (node references survive saving and reloading the scene)."""
    segmentation.RemoveNodeReferenceIDs(CHANNEL_ROLE)
    for node in channels:
        segmentation.AddNodeReferenceID(CHANNEL_ROLE, node.GetID())
    segmentation.SetAttribute(CHANNEL_NAMES, json.dumps(list(names)) if channels else "")


def remembered_channels(segmentation) -> Tuple[List, List[str]]:
    """(channel volumes 2, 3..., names of all channels) a prediction was made from; empty for one channel."""
    count = segmentation.GetNumberOfNodeReferences(CHANNEL_ROLE)
    channels = [segmentation.GetNthNodeReference(CHANNEL_ROLE, i) for i in range(count)]
    try:
        names = json.loads(segmentation.GetAttribute(CHANNEL_NAMES) or "[]")
    except ValueError:
        names = []
    return channels, [str(n) for n in names] if isinstance(names, list) else []
