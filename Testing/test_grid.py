"""Grids: one check of 'the same grid', and 'the same voxels with axes permuted or flipped'.

The real case: TotalSegmentator's reference labelmap of its DICOM example is the
series' own voxel lattice stored with the y axis flipped (LAS NIfTI vs LPS DICOM).
"""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.data.grid import Grid, grid_problems, lattice_permutation, permute_onto
from TransferSegLib.data.images import read_image

TS = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "TotalSegmentator"


def _grid(size=(4, 5, 6), spacing=(1.0, 2.0, 3.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    return Grid(tuple(size), tuple(float(s) for s in spacing), tuple(float(o) for o in origin),
                tuple(float(d) for d in direction))


def test_the_same_grid_within_tolerance_has_no_problems_and_differences_are_named():
    a = _grid()
    assert grid_problems(a, _grid(origin=(0.0005, 0, 0))) == []
    problems = grid_problems(a, _grid(size=(4, 5, 7), origin=(1.0, 0, 0)))
    assert any(p.startswith("size") for p in problems) and any(p.startswith("origin") for p in problems)


def test_the_dicom_reference_is_the_series_lattice_with_y_flipped():
    series = Grid.of(read_image(str(TS / "example_ct_dicom")))
    reference_image = sitk.ReadImage(str(TS / "example_seg_dicom.nii.gz"))
    reference = Grid.of(reference_image)
    assert grid_problems(series, reference)  # not the same grid as stored...
    mapping = lattice_permutation(reference, series)  # ...but the same voxel centres
    assert mapping is not None and mapping.axes == (0, 1, 2) and mapping.flips == (False, True, False)
    moved = permute_onto(sitk.GetArrayFromImage(reference_image).transpose(2, 1, 0), mapping)
    resampled = sitk.Resample(reference_image, read_image(str(TS / "example_ct_dicom")), sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0)
    assert np.array_equal(moved, sitk.GetArrayFromImage(resampled).transpose(2, 1, 0))


def test_a_permuted_and_flipped_copy_is_found_and_undone_exactly():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 5, (4, 5, 6)).astype(np.uint8)  # (X, Y, Z)
    target = sitk.GetImageFromArray(array.transpose(2, 1, 0))
    target.SetSpacing((1.0, 2.0, 3.0))
    target.SetOrigin((10.0, -5.0, 2.0))
    code = "SAL"  # another axis order and sense for the same voxels
    source = sitk.DICOMOrient(target, code)
    assert grid_problems(Grid.of(target), Grid.of(source))
    mapping = lattice_permutation(Grid.of(source), Grid.of(target))
    assert mapping is not None and mapping.permuted
    assert np.array_equal(permute_onto(sitk.GetArrayFromImage(source).transpose(2, 1, 0), mapping), array)


@pytest.mark.parametrize("change", [dict(origin=(0.5, 0.0, 0.0)), dict(spacing=(1.0, 2.0, 3.3)), dict(size=(4, 5, 5)),
                                    dict(direction=(0.8, 0.6, 0, -0.6, 0.8, 0, 0, 0, 1))])
def test_a_real_mismatch_is_not_a_permutation(change):
    assert lattice_permutation(_grid(**change), _grid()) is None
