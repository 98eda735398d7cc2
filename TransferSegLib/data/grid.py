"""A voxel grid's geometry without its voxels (size, spacing, origin, direction).

SimpleITK conventions: LPS physical space, direction cosines as index-axis columns.
Preprocessing, resampling and the restore onto the input grid all speak in grids.
"""

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np
import SimpleITK as sitk


@dataclass
class Grid:
    """A voxel grid's geometry (SimpleITK conventions, LPS physical space), no voxels."""

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def matrix(self) -> np.ndarray:
        """Direction cosines as a 3x3 matrix whose columns are the index axes."""
        return np.array(self.direction, float).reshape(3, 3)

    def reference(self, pixel=sitk.sitkUInt8) -> sitk.Image:
        """A one-voxel-type image with this geometry (a resampling target)."""
        image = sitk.Image([int(s) for s in self.size], pixel)
        self.stamp(image)
        return image

    def stamp(self, image: sitk.Image) -> sitk.Image:
        """Give ``image`` exactly this geometry (same size assumed)."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def image_from_xyz(self, array: np.ndarray) -> sitk.Image:
        """An image on this grid from an ``(X, Y, Z)`` array."""
        if tuple(array.shape) != tuple(self.size):
            raise ValueError(f"array of shape {array.shape} does not fit a grid of size {self.size}")
        return self.stamp(sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0)))))

    def to_dict(self) -> Dict[str, Any]:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Grid":
        return cls(tuple(int(v) for v in data["size"]), tuple(float(v) for v in data["spacing"]),
                   tuple(float(v) for v in data["origin"]), tuple(float(v) for v in data["direction"]))
