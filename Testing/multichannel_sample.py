"""A four-channel MR case made from the shipped MR, for BraTS-style inputs.

No multi-sequence MR is shipped (nor small enough to ship), so the four channels
are *derived* from ``example_mr_sm.nii.gz`` (TotalSegmentator's MR example): the
image itself, a Gaussian-smoothed copy, an inverted copy inside the body and the
gradient magnitude. They stand in for T1c, T1, T2 and FLAIR: co-registered, on one
grid, with different contrasts, which is what the multi-channel code has to
handle. They are not real MR sequences, and a model trained on them learns
nothing about brain tumours.
"""

from pathlib import Path
from typing import List

import SimpleITK as sitk

SAMPLES = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "TotalSegmentator"
MR = SAMPLES / "example_mr_sm.nii.gz"
MR_LABELS = SAMPLES / "example_seg_mr.nii.gz"
CHANNELS = ("T1c", "T1", "T2", "FLAIR")


def derived_channels(image: sitk.Image) -> List[sitk.Image]:
    """Four co-registered float images from one MR (see the module docstring)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    smooth = sitk.SmoothingRecursiveGaussian(image, 4.0)
    body = sitk.Cast(image > 20.0, sitk.sitkFloat32)
    peak = float(sitk.GetArrayViewFromImage(image).max())
    inverted = (peak - image) * body
    gradient = sitk.GradientMagnitudeRecursiveGaussian(image, 3.0)
    out = []
    for channel in (image, smooth, inverted, gradient):
        channel = sitk.Cast(channel, sitk.sitkFloat32)
        channel.CopyInformation(image)
        out.append(channel)
    return out


def write_multichannel_mr(folder: Path, case: str = "mr", layout: str = "files") -> List[Path]:
    """Write the four channels: ``files`` gives ``<case>_<name>.nii.gz`` per channel,
    ``nnunet`` gives ``<case>_0000.nii.gz`` .. ``_0003``, ``4d`` one Decathlon-style 4D
    NIfTI. Returns the written paths in channel order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    channels = derived_channels(sitk.ReadImage(str(MR)))
    if layout == "4d":
        path = folder / f"{case}.nii.gz"
        sitk.WriteImage(sitk.JoinSeries(channels), str(path))
        return [path]
    paths = []
    for index, (name, channel) in enumerate(zip(CHANNELS, channels)):
        path = folder / (f"{case}_{index:04d}.nii.gz" if layout == "nnunet" else f"{case}_{name}.nii.gz")
        sitk.WriteImage(channel, str(path))
        paths.append(path)
    return paths
