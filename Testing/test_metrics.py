"""Metrics against hand-computed cases: cubes, shifted cubes, anisotropic grids, empty masks."""

import math

import numpy as np
import pytest

from TransferSegLib.errors import CaseError
from TransferSegLib.evaluation.metrics import CaseMetrics, ClassMetrics, class_metrics, compute_metrics, dice_per_class


def _cube(shape=(12, 12, 12), low=(2, 2, 2), high=(6, 6, 6)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = True
    return mask


def test_identical_masks_score_perfectly():
    m = class_metrics(_cube(), _cube(), (1.0, 1.0, 1.0))
    assert (m.dice, m.iou, m.hd95, m.assd, m.rvd, m.surface_dice) == (1.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert m.ref_voxels == m.pred_voxels == 64


def test_cube_shifted_by_one_voxel_matches_hand_computation():
    # 4^3 cubes overlapping in 3x4x4 voxels: Dice 96/128, IoU 48/80.
    # Each surface has 56 voxels, 20 of them 1 mm from the other surface (the far
    # face: 16, the 4 inner voxels of the near face) and 36 on it: ASSD = 40/112.
    pred, ref = _cube(low=(3, 2, 2), high=(7, 6, 6)), _cube()
    m = class_metrics(pred, ref, (1.0, 1.0, 1.0), tolerance_mm=0.5)
    assert m.dice == pytest.approx(0.75)
    assert m.iou == pytest.approx(0.6)
    assert m.hd95 == pytest.approx(1.0)
    assert m.assd == pytest.approx(40 / 112)
    assert m.rvd == 0.0
    # Surface Dice weighs the paper's surface elements by area: of each cube's 96 mm^2
    # the four side faces (64 mm^2) coincide with the other cube's, the two end faces
    # lie 1 mm from the other's: 2/3, a little less where the elements bevel the edges.
    assert m.surface_dice == pytest.approx(2 / 3, abs=0.01)
    assert class_metrics(pred, ref, (1.0, 1.0, 1.0), tolerance_mm=1.0).surface_dice == pytest.approx(1.0)


def test_anisotropic_spacing_scales_distances_along_its_axis():
    pred, ref = _cube(low=(2, 2, 3), high=(6, 6, 7)), _cube()
    isotropic = class_metrics(pred, ref, (1.0, 1.0, 1.0))
    thick_slices = class_metrics(pred, ref, (1.0, 1.0, 3.0), tolerance_mm=2.0)
    assert isotropic.hd95 == pytest.approx(1.0)
    assert thick_slices.hd95 == pytest.approx(3.0)
    # Per direction: the 16 far-face voxels are 3 mm away; the 4 inner near-face
    # voxels are 1 mm from the side faces (closer than the 3 mm slice below).
    assert thick_slices.assd == pytest.approx(2 * (16 * 3 + 4 * 1) / 112)
    # Overlap does not depend on spacing.
    assert thick_slices.dice == pytest.approx(isotropic.dice)
    # The same shift along x on this grid stays within the 2 mm tolerance.
    along_x = class_metrics(_cube(low=(3, 2, 2), high=(7, 6, 6)), ref, (1.0, 1.0, 3.0), tolerance_mm=2.0)
    assert along_x.surface_dice == pytest.approx(1.0)
    assert thick_slices.surface_dice < 1.0


def test_hd95_ignores_a_few_outlier_voxels_but_not_many():
    ref = np.zeros((40, 40, 40), dtype=bool)
    ref[5:25, 5:25, 5:25] = True
    pred = ref.copy()
    pred[35, 35, 35] = True  # one stray voxel ~17 mm away
    m = class_metrics(pred, ref, (1.0, 1.0, 1.0))
    assert m.hd95 < 1.0
    assert m.assd > 0.0
    pred[30:38, 30:38, 30:38] = True  # a large false-positive blob
    assert class_metrics(pred, ref, (1.0, 1.0, 1.0)).hd95 > 5.0


def test_surfaces_touching_the_image_border_count_as_surface():
    ref = np.ones((5, 5, 5), dtype=bool)
    pred = ref.copy()
    pred[4] = False
    m = class_metrics(pred, ref, (1.0, 1.0, 1.0))
    assert m.hd95 == pytest.approx(1.0)
    assert m.rvd == pytest.approx(-0.2)


def test_both_empty_is_a_perfect_score():
    empty = np.zeros((4, 4, 4), dtype=bool)
    m = class_metrics(empty, empty, (1.0, 1.0, 1.0))
    assert (m.dice, m.iou, m.hd95, m.assd, m.rvd, m.surface_dice) == (1.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert m.empty == "both"


def test_missed_organ_has_infinite_distances_and_rvd_minus_one():
    m = class_metrics(np.zeros((12, 12, 12), dtype=bool), _cube(), (1.0, 1.0, 1.0))
    assert (m.dice, m.iou, m.surface_dice, m.rvd) == (0.0, 0.0, 0.0, -1.0)
    assert math.isinf(m.hd95) and math.isinf(m.assd)
    assert m.empty == "prediction"


def test_false_positive_organ_has_infinite_rvd():
    m = class_metrics(_cube(), np.zeros((12, 12, 12), dtype=bool), (1.0, 1.0, 1.0))
    assert m.dice == 0.0 and math.isinf(m.rvd) and math.isinf(m.hd95)
    assert m.empty == "reference"


def test_compute_metrics_names_classes_and_skips_background():
    ref = np.zeros((12, 12, 12), dtype=np.uint8)
    ref[_cube()] = 1
    ref[8:11, 8:11, 8:11] = 2
    pred = ref.copy()
    pred[pred == 2] = 0
    case = compute_metrics(pred, ref, ["background", "liver", "tumor"], (1.0, 1.0, 1.0), case="c1")
    assert isinstance(case, CaseMetrics) and case.case == "c1"
    assert [c.label for c in case.classes] == ["liver", "tumor"]
    assert case.by_label("liver").dice == 1.0
    assert case.by_label("tumor").dice == 0.0
    assert case.mean_dice == pytest.approx(0.5)
    assert math.isinf(case.mean_hd95)


def test_compute_metrics_refuses_different_shapes():
    with pytest.raises(CaseError, match="shape"):
        compute_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), ["background", "a"], (1, 1, 1), case="c")


def test_case_means_of_no_classes_are_nan():
    assert math.isnan(CaseMetrics("c", []).mean_dice)
    assert isinstance(ClassMetrics("a", 1, 1, 0, 0, 0, 1, 1, 1).empty, type(None))


def test_dice_per_class_matches_per_class_comparison():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, size=(20, 15, 10)).astype(np.uint8)
    ref = rng.integers(0, 4, size=(20, 15, 10)).astype(np.int16)
    expected = []
    for c in range(6):
        denom = (pred == c).sum() + (ref == c).sum()
        expected.append(1.0 if denom == 0 else 2 * ((pred == c) & (ref == c)).sum() / denom)
    np.testing.assert_allclose(dice_per_class(pred, ref, 6), expected)
    assert np.isnan(dice_per_class(pred, ref, 6, empty_value=float("nan"))[5])


def test_dice_per_class_agrees_with_compute_metrics():
    ref = np.zeros((12, 12, 12), dtype=np.uint8)
    ref[_cube()] = 1
    pred = np.zeros_like(ref)
    pred[_cube(low=(3, 2, 2), high=(7, 6, 6))] = 1
    fast = dice_per_class(pred, ref, 2)
    assert fast[1] == pytest.approx(compute_metrics(pred, ref, ["background", "a"], (1, 1, 1)).classes[0].dice)


def test_dice_per_class_rejects_labels_beyond_num_classes():
    with pytest.raises(ValueError, match="outside"):
        dice_per_class(np.array([0, 3]), np.array([0, 1]), 3)
