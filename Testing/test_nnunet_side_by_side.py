"""bench/nnunet_side_by_side.py: the parts that run without nnU-Net installed."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "nnunet_side_by_side.py"


@pytest.fixture(scope="module")
def side_by_side():
    spec = importlib.util.spec_from_file_location("nnunet_side_by_side", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _image(array_xyz: np.ndarray, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(array_xyz.transpose(2, 1, 0).copy())
    img.SetSpacing((2.0, 2.0, 3.0))
    img.SetDirection(direction)
    img.SetOrigin(origin)
    return img


def test_reference_with_flipped_y_axis_is_matched_in_physical_space(side_by_side):
    ct = np.zeros((6, 8, 4), np.int16)
    grid = _image(ct)
    seg = np.zeros((6, 8, 4), np.uint8)
    seg[1:3, 0:2, :] = 5  # low y indices of the flipped file = high y of the grid
    seg[4, 4, 0] = 2
    flipped = _image(seg, direction=(1, 0, 0, 0, -1, 0, 0, 0, 1), origin=(0.0, 14.0, 0.0))

    mask = sitk.GetArrayFromImage(side_by_side.binary_label(flipped, 5, grid)).transpose(2, 1, 0)

    assert mask.sum() == 2 * 2 * 4
    assert mask[1:3, 6:8, :].all()
    assert not mask[:, 0:2, :].any()


def test_raw_dataset_follows_nnunet_layout(side_by_side, tmp_path):
    arr = np.zeros((6, 8, 4), np.int16)
    seg = np.zeros((6, 8, 4), np.uint8)
    seg[2:4, 2:5, 1:3] = 5
    seg[0, 0, 0] = 3
    sitk.WriteImage(_image(arr), str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(_image(seg), str(tmp_path / "seg.nii.gz"))
    raw = tmp_path / "Dataset509_Liver"
    case = ("tr00_ct", tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz")
    test = ("ts00_ct", tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz")

    refs = side_by_side.make_raw_dataset(raw, [case], [test], 5, "liver")

    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": 1}
    assert meta["channel_names"] == {"0": "CT"} and meta["numTraining"] == 1
    assert (raw / "imagesTr" / "tr00_ct_0000.nii.gz").exists()
    assert (raw / "imagesTs" / "ts00_ct_0000.nii.gz").exists()
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / "tr00_ct.nii.gz")))
    assert set(np.unique(label)) == {0, 1} and label.sum() == 2 * 3 * 2
    assert sitk.GetArrayFromImage(refs["ts00_ct"]).sum() == 2 * 3 * 2


def test_dice_counts_overlap_and_empty_pair(side_by_side):
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert side_by_side.dice(a, b) == pytest.approx(0.5)
    assert side_by_side.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_pseudo_dice_is_read_from_numpy_scalar_reprs(side_by_side, tmp_path):
    (tmp_path / "training_log_2026.txt").write_text(
        "Pseudo dice [np.float32(0.25)]\nPseudo dice [np.float32(0.75), np.float32(0.5)]\n")
    assert side_by_side.last_pseudo_dice(tmp_path) == pytest.approx(0.625)
