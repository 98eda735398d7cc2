"""A prediction's optional outputs: per-class probabilities and an uncertainty map on the input grid.

Both need every class at every voxel: classes × voxels × 4 bytes, 9 GB for 29
classes on a 512×512×300 CT. They come from one pass over slabs of the input's
slices (``restore_blocks.restored_slabs``), so memory holds one slab at a time:

- the uncertainty (normalized entropy, one float per voxel) is assembled in memory;
- the probabilities are streamed slab by slab into an uncompressed MetaImage
  (``.mha``, a vector image Slicer and SimpleITK read) whose size on disk is the
  figure above; or, for small volumes through the Python API, kept in memory
  (refused above ``MAX_IN_MEMORY_BYTES``).
"""

import os
from pathlib import Path
from typing import BinaryIO, Optional, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from TransferSegLib.data.grid import Grid
from TransferSegLib.data.preprocess import PreprocessInfo
from TransferSegLib.errors import ModelError
from TransferSegLib.inference.restore_blocks import DEFAULT_BUDGET_BYTES, restored_slabs

MAX_IN_MEMORY_BYTES = 2 * 2**30
PROBABILITY_SUFFIX = ".mha"


def check_probabilities_path(path: Path) -> None:
    """Refuse, before any work, a probabilities path that cannot be streamed."""
    if not str(path).lower().endswith(PROBABILITY_SUFFIX):
        raise ModelError(f"Probabilities '{path}' must be a .mha file: they are streamed slab by slab into an "
                         f"uncompressed MetaImage (classes × voxels × 4 bytes on disk).")


def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy over the class axis (0) divided by its maximum: 0 certain, 1 uniform."""
    classes = probs.shape[0]
    return -(probs * torch.log(probs.clamp(1e-8, 1.0))).sum(0) / float(np.log(max(classes, 2)))


class _MetaImageStream:
    """A float32 vector MetaImage written slab by slab under a temporary name, renamed when complete."""

    def __init__(self, path: Path, grid: Grid, channels: int):
        self.path = Path(path)
        self.tmp = self.path.with_name(".tmp-" + self.path.name)
        self.plane = int(grid.size[0]) * int(grid.size[1]) * channels * 4
        direction = np.array(grid.direction, float).reshape(3, 3)
        numbers = lambda values: " ".join(repr(float(v)) for v in values)  # noqa: E731
        header = "\n".join([
            "ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
            "CompressedData = False",
            f"TransformMatrix = {numbers(direction.T.ravel())}",  # MetaIO lists the direction's columns
            f"Offset = {numbers(grid.origin)}", "CenterOfRotation = 0 0 0",
            f"ElementSpacing = {numbers(grid.spacing)}",
            f"DimSize = {' '.join(str(int(s)) for s in grid.size)}",
            f"ElementNumberOfChannels = {channels}", "ElementType = MET_FLOAT", "ElementDataFile = LOCAL",
        ]) + "\n"
        self.offset = len(header.encode("ascii"))
        self.file: BinaryIO = open(self.tmp, "wb")
        try:
            self.file.write(header.encode("ascii"))
            self.file.truncate(self.offset + self.plane * int(grid.size[2]))
        except BaseException:  # a full disk at the start leaves nothing behind either
            self.abort()
            raise

    def write(self, z0: int, slab: torch.Tensor) -> None:
        """``slab``: ``(C, X, Y, n)`` for input slices ``z0 .. z0 + n``."""
        values = np.ascontiguousarray(slab.permute(3, 2, 1, 0).cpu().numpy(), dtype="<f4")
        self.file.seek(self.offset + z0 * self.plane)
        self.file.write(memoryview(values).cast("B"))

    def commit(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.file.close()  # flushing what is buffered can fail again on a full disk
        except OSError:
            pass
        if self.tmp.exists():
            self.tmp.unlink()


def restored_outputs(probs: torch.Tensor, info: PreprocessInfo, keep: bool = False, uncertainty: bool = False,
                     probabilities_path: Optional[Path] = None, budget_bytes: int = DEFAULT_BUDGET_BYTES,
                     ) -> Tuple[Optional[np.ndarray], Optional[sitk.Image]]:
    """The probabilities ``(C, X, Y, Z)`` on the input grid (when ``keep``), the uncertainty
    image (when ``uncertainty``), and the streamed ``probabilities_path``, in one pass."""
    if not (keep or uncertainty or probabilities_path is not None):
        return None, None
    classes = int(probs.shape[0])
    size = tuple(int(s) for s in info.original.size)
    if keep and classes * int(np.prod(size)) * 4 > MAX_IN_MEMORY_BYTES:
        raise ModelError(f"Keeping {classes} probability maps of {size} voxels in memory needs "
                         f"{classes * np.prod(size) * 4 / 2**30:.1f} GB: write them to a .mha file instead "
                         f"(--probabilities out.mha streams them).")
    kept = np.empty((classes,) + size, np.float32) if keep else None
    entropy = np.empty(size[::-1], np.float32) if uncertainty else None
    stream = _MetaImageStream(probabilities_path, info.original, classes) if probabilities_path is not None else None
    try:
        for z0, z1, slab in restored_slabs(probs, info, budget_bytes):
            if kept is not None:
                kept[..., z0:z1] = slab.cpu().numpy()
            if entropy is not None:
                entropy[z0:z1] = normalized_entropy(slab).permute(2, 1, 0).cpu().numpy()
            if stream is not None:
                stream.write(z0, slab)
        if stream is not None:
            stream.commit()
    except BaseException:
        if stream is not None:
            stream.abort()
        raise
    image = None
    if entropy is not None:
        image = info.original.stamp(sitk.GetImageFromArray(entropy))
    return kept, image
