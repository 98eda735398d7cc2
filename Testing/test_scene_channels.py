"""Multi-channel cases in the panel's Logic, on real MRML (slicer-core): one volume per input channel.

A model of several input channels (BraTS: T1c, T1, T2, FLAIR) gets one volume node
per channel for each case and for each prediction. The Logic writes one file per
channel with the model's channel names, refuses a channel volume that is not on
channel 1's grid (by name) and a case whose channel count does not fit the model,
before any job folder exists. Workers are real subprocesses.
"""

import json
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from slicer_fixture import mrml_scene  # noqa: F401  (pytest fixture)
from test_panel_logic import brick, drawn, small_ct

import slicer  # noqa: E402

from TransferSegLib.errors import CaseError  # noqa: E402
from TransferSegLib.scene import segment_names  # noqa: E402
from TransferSegLib.scene.geometry import volume_from_image  # noqa: E402
from TransferSegLib.scene.logic import TransferSegLogic  # noqa: E402

BRATS = "brats_mri_segmentation"


@pytest.fixture
def logic(mrml_scene, tmp_path):
    return TransferSegLogic(python=sys.executable, work_root=str(tmp_path / "home"))


def second_channel(image: sitk.Image, name: str, **geometry) -> object:
    """Another contrast of the same voxels (or, with ``geometry``, the same voxels placed elsewhere)."""
    other = sitk.Cast(sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), 2.0), sitk.sitkInt16)
    other.CopyInformation(image)
    if "spacing" in geometry:
        other.SetSpacing(geometry["spacing"])
    if "origin" in geometry:
        other.SetOrigin(geometry["origin"])
    return volume_from_image(other, name)


def test_a_models_channels_are_known_without_torch_from_its_catalog_entry(logic):
    assert logic.model_channels(BRATS) == (["T1c", "T1", "T2", "FLAIR"], 4)
    assert logic.model_channels("default") == ([], 1)
    assert logic.model_channels("none") == ([], None)  # a network built for the cases: any count
    row = next(r for r in logic.base_models() if r.name == BRATS)
    assert row.channel_labels == ["T1c", "T1", "T2", "FLAIR"]
    assert next(r for r in logic.base_models() if r.name == "default").channel_labels == []


def test_a_case_short_of_channels_is_refused_before_any_job_folder(logic, tmp_path):
    image = small_ct()
    t1c = volume_from_image(image, "T1c")
    seg = drawn(t1c, {"tumor_core": brick(image.GetSize()[::-1], (2, 2, 2), (10, 12, 12))})
    cases = logic.add_case(t1c, seg, ["tumor_core"]).cases
    with pytest.raises(CaseError, match=r"reads 4 channel\(s\) \(T1c, T1, T2, FLAIR\); the case 'T1c' gives 1"):
        logic.start_finetune(cases, base=BRATS, strategy="full", iterations=1)
    assert not (tmp_path / "home" / "jobs").exists()


def test_a_channel_volume_off_channel_ones_grid_is_refused_by_name(logic):
    image = small_ct()
    t1 = volume_from_image(image, "T1")
    seg = drawn(t1, {"liver": brick(image.GetSize()[::-1], (2, 2, 2), (10, 12, 12))})
    moved = second_channel(image, "FLAIR moved", origin=(12.0, -20.0, 5.0))
    coarse = second_channel(image, "FLAIR coarse", spacing=(2.0, 1.5, 3.0))
    for node in (moved, coarse):
        with pytest.raises(CaseError, match=rf"channel volume '{node.GetName()}' \(FLAIR\) is not on the grid "
                                            rf"of 'T1' \(T1\).*resample '{node.GetName()}' onto 'T1'"):
            logic.add_case(t1, seg, ["liver"], channels=[node], channel_names=["T1", "FLAIR"])
    with pytest.raises(CaseError, match=r"no volume is picked for channel 2 \(FLAIR\)"):
        logic.add_case(t1, seg, ["liver"], channels=[None], channel_names=["T1", "FLAIR"])
    flair = second_channel(image, "FLAIR")
    added = logic.add_case(t1, seg, ["liver"], channels=[flair], channel_names=["T1", "FLAIR"])
    assert added.case.volumes == [t1, flair]


def test_a_two_channel_case_trains_predicts_and_comes_back_as_a_correction(logic, tmp_path):
    pytest.importorskip("torch")
    image = small_ct()
    t1 = volume_from_image(image, "T1")
    flair = second_channel(image, "FLAIR")
    seg = drawn(t1, {"liver": brick(image.GetSize()[::-1], (2, 2, 2), (10, 12, 12))})
    cases = logic.add_case(t1, seg, ["liver"], channels=[flair], channel_names=["T1", "FLAIR"]).cases
    run = logic.start_finetune(cases, base="none", strategy="scratch", iterations=2, time_budget_s=None,
                               train={"patch_size": [16, 16, 16], "batch_size": 1, "val_every": 2})

    spec = json.loads((run.directory / "spec.json").read_text(encoding="utf-8"))
    case = spec["cases"][0]
    assert case["channel_names"] == ["T1", "FLAIR"] and len(case["channels"]) == 2 and case["image"] == case["channels"][0]
    for path, node in zip(case["channels"], (t1, flair)):  # each channel's own voxels, on one grid
        written = sitk.ReadImage(path)
        assert np.array_equal(sitk.GetArrayFromImage(written), slicer.util.arrayFromVolume(node))
        assert np.allclose(written.GetOrigin(), image.GetOrigin()) and np.allclose(written.GetSpacing(), image.GetSpacing())

    finished = logic.wait_for_training(timeout=600)
    assert finished.state == "finished", finished.error
    assert logic.model_channels(finished.model) == (["T1", "FLAIR"], 2)  # the card keeps the channel names

    with pytest.raises(CaseError, match=r"reads 2 channel\(s\) \(T1, FLAIR\)"):
        logic.start_prediction(t1, finished.model)  # one volume for a two-channel model
    assert logic.prediction is None
    with pytest.raises(CaseError, match="'FLAIR moved' \\(FLAIR\\) is not on the grid of 'T1'"):
        logic.start_prediction(t1, finished.model, channels=[second_channel(image, "FLAIR moved", origin=(0, 0, 0))])
    run = logic.start_prediction(t1, finished.model, channels=[flair])
    run.process.wait(600)
    assert logic.prediction_percent() == 100  # the command line's own progress lines, read from its log
    assert "100 %" in logic.prediction_status()
    node = logic.poll_prediction()
    assert node.IsA("vtkMRMLSegmentationNode") and segment_names(node) == ["liver"]

    corrected = logic.case_from_correction(node, reviewed=["liver"])  # the prediction remembers its channels
    assert corrected.volumes == [t1, flair] and corrected.channel_names == ["T1", "FLAIR"]
