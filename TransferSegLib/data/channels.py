"""Multi-channel cases: several co-registered images of one patient (MR sequences,
CT + PET) that a network reads together, one input channel each.

A case names its channel files in one of three ways:

- on the command line, one ``--image`` per case with the files separated by commas,
  optionally named: ``--image T1c=a.nii.gz,T1=b.nii.gz,T2=c.nii.gz,FLAIR=d.nii.gz``
  (names are matched to the model's channel names, case-insensitively; without
  names the files are taken in the model's channel order);
- nnU-Net's ``<case>_0000.nii.gz`` .. ``<case>_000N.nii.gz`` files (a
  ``dataset.json`` with ``channel_names``): channel k is file ``_000k``;
- a Decathlon-style 4D NIfTI: the fourth axis holds the channels (``modality`` in
  its ``dataset.json`` names them).

The model says which channels it needs: ``input_channels`` in its card (a base
model's published channel names, e.g. the BraTS bundle's ``channel_def``; a
fine-tuned model keeps its base's), or only a count (the network's
``in_channels``). Every channel must lie on channel 0's grid: the channels are
stacked voxel by voxel, so an unregistered channel would silently be nonsense.
"""

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from TransferSegLib.data.grid import Grid, grid_problems
from TransferSegLib.data.images import read_image
from TransferSegLib.errors import CaseError


def _norm(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def order_channels(paths: Sequence[str], names: Sequence[str], expected: Sequence[str], count: Optional[int],
                   where: str) -> List[str]:
    """The case's channel files in the model's channel order.

    ``expected``: the model's channel names (may be empty), ``count``: its number of
    input channels (None: any). Named files are matched by name; unnamed ones are
    taken in order. A count that does not fit is an error naming what is needed.
    """
    paths = list(paths)
    wanted = len(expected) if expected else count
    if len(paths) == 1 and not names and wanted and channel_count(paths) == wanted:
        return paths  # a 4D file holding the channels in order
    need = (f"{wanted} channel(s)" + (f" ({', '.join(expected)})" if expected else "")) if wanted else ""
    if names and expected:
        given = {_norm(n): p for n, p in zip(names, paths)}
        if len(given) != len(names):
            raise CaseError(f"{where}: a channel name is given twice in {list(names)}.")
        missing = [e for e in expected if _norm(e) not in given]
        unknown = [n for n in names if _norm(n) not in {_norm(e) for e in expected}]
        if missing or unknown:
            raise CaseError(f"{where}: the model needs {need}; missing {missing or 'none'}, not a channel of the model "
                            f"{unknown or 'none'}. Give --image " + ",".join(f"{e}=FILE" for e in expected) + ".")
        return [given[_norm(e)] for e in expected]
    if wanted and len(paths) != wanted:
        example = ",".join(f"{e}=FILE" for e in expected) if expected else ",".join(["FILE"] * wanted)
        raise CaseError(f"{where}: the model needs {need}, the case gives {len(paths)} ({', '.join(paths)}). "
                        f"Give one --image per case with every channel: --image {example}.")
    return paths


def _four_d(path: str) -> Optional[int]:
    """The number of volumes of a 4D file (None for 3D files and folders)."""
    p = Path(path).expanduser()
    if p.is_dir() or not p.exists():
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    size = reader.GetSize()
    return int(size[3]) if len(size) == 4 and size[3] > 1 else None


def _split_4d(path: str) -> List[sitk.Image]:
    image = sitk.ReadImage(str(Path(path).expanduser()))
    size = list(image.GetSize())
    out = []
    for t in range(size[3]):
        volume = sitk.Cast(sitk.Extract(image, size[:3] + [0], [0, 0, 0, t]), sitk.sitkFloat32)
        if not np.isfinite(sitk.GetArrayViewFromImage(volume)).all():
            raise CaseError(f"'{path}' volume {t} contains NaN or infinite voxels: fix or re-export the image.")
        out.append(volume)
    return out


def read_channels(paths: Sequence[str]) -> List[sitk.Image]:
    """Every channel of a case as a 3D float32 image; a 4D file gives one channel
    per volume. Channels not on channel 0's grid are refused, naming the file."""
    images: List[sitk.Image] = []
    sources: List[str] = []
    for path in paths:
        if _four_d(path):
            volumes = _split_4d(path)
            images.extend(volumes)
            sources.extend(f"{path} (volume {t})" for t in range(len(volumes)))
        else:
            images.append(read_image(path))
            sources.append(str(path))
    check_same_grid(images, sources)
    return images


def check_same_grid(images: Sequence[sitk.Image], sources: Sequence[str]) -> None:
    """Refuse a channel that is not on channel 0's grid (``grid.grid_problems``'s tolerances)."""
    first = Grid.of(images[0])
    for image, source in zip(images[1:], sources[1:]):
        problems = grid_problems(Grid.of(image), first)
        if problems:
            raise CaseError(f"Channel '{source}' is not on the grid of '{sources[0]}' ({'; '.join(problems)}): the "
                            f"channels of a case must be co-registered on one grid; resample them onto channel 0 first.")


def channel_count(paths: Sequence[str]) -> int:
    """How many channels the files hold (a 4D file counts its volumes), without reading voxels."""
    return sum(_four_d(p) or 1 for p in paths)
