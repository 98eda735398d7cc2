"""No bad input passes silently: cut-short files, NaN voxels, blank images, a scan given as a labelmap.

Each bad file is real (written, then damaged as a failed copy or export would
leave it) and goes through the real command line: ``predict``, ``evaluate`` and
``finetune``; each must end in a ``CaseError`` naming the file, with nothing written.
"""

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.cli import main
from TransferSegLib.data.images import read_image
from TransferSegLib.data.labelmaps import read_labelmap
from TransferSegLib.data.sample_data import sample_cases
from TransferSegLib.errors import CaseError
from TransferSegLib.model_card import ModelCard
from TransferSegLib.models.model_dir import save_model_dir
from TransferSegLib.specs import NetworkSpec
from TransferSegLib.training.networks import build_network
from TransferSegLib.data.recipe import Recipe
from security_fixtures import TINY_NETWORK, write_ct, write_label

SAMPLE = Path(__file__).resolve().parent.parent / "Resources" / "SampleData" / "TotalSegmentator"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    meta = ModelCard(name="tiny", network=NetworkSpec.from_dict(TINY_NETWORK), labels=["background", "liver"],
                     recipe=Recipe(spacing=None, crop_foreground=False), patch_size=(32, 32, 32))
    return save_model_dir(tmp_path_factory.mktemp("m") / "tiny", build_network(NetworkSpec.from_dict(TINY_NETWORK))
                          .state_dict(), meta)


def _cut(path: Path, fraction: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _nan_nifti(path: Path, all_nan: bool = False, labels: bool = False) -> Path:
    """A float NIfTI with NaN and inf voxels (ITK reads them back as 0, so only the raw data shows them)."""
    array = np.random.default_rng(0).normal(0, 50, (16, 16, 16)).astype(np.float32)
    if labels:
        array = (array > 0).astype(np.float32)
    if all_nan:
        array[:] = np.nan
    else:
        array[3, 4, 5], array[6, 7, 8] = np.nan, np.inf
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def _bad_images(tmp_path: Path):
    """(file, words the error must hold) for every kind of bad image."""
    truncated_gz = _cut(shutil.copy(SAMPLE / "example_ct_sm.nii.gz", tmp_path / "cut.nii.gz"))
    truncated_nrrd = tmp_path / "cut.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE / "example_ct_sm.nii.gz")), str(truncated_nrrd), True)
    _cut(truncated_nrrd, 0.9)
    blank = tmp_path / "blank.nii.gz"
    sitk.WriteImage(sitk.Image(16, 16, 16, sitk.sitkInt16) - 1000, str(blank))
    return [(truncated_gz, "incomplete"), (Path(truncated_nrrd), "incomplete"),
            (_nan_nifti(tmp_path / "nan.nii.gz"), "2 NaN or infinite"),
            (_nan_nifti(tmp_path / "allnan.nii.gz", all_nan=True), "4096 NaN or infinite"),
            (blank, "-1000 in every voxel")]


def test_bad_images_are_refused_by_predict_naming_the_file(model, tmp_path, capsys):
    for image, words in _bad_images(tmp_path):
        out = tmp_path / "pred.nii.gz"
        rc = main(["predict", "--model", str(model), "--image", str(image), "--output", str(out), "--device", "cpu"])
        err = capsys.readouterr().err
        assert rc == CaseError.exit_code and words in err and str(image) in err, err
        assert not out.exists()


def test_bad_training_files_are_refused_before_training(tmp_path, capsys):
    label = write_label(tmp_path / "lab.nii.gz")
    image = write_ct(tmp_path / "ct.nii.gz")
    cut_label = _cut(shutil.copy(label, tmp_path / "cut-lab.nii.gz"), 0.5)
    ct_as_label = shutil.copy(SAMPLE / "example_ct_sm.nii.gz", tmp_path / "ct-as-label.nii.gz")
    mr = sitk.ReadImage(str(SAMPLE / "example_mr_sm.nii.gz"))
    mr_as_label = tmp_path / "mr-as-label.nii.gz"
    sitk.WriteImage(sitk.Cast(sitk.Clamp(mr, lowerBound=0), sitk.sitkUInt16), str(mr_as_label))  # no negatives
    all_nan = _nan_nifti(tmp_path / "allnan.nii.gz", all_nan=True)
    cases = [(image, cut_label, cut_label, "incomplete"),
             (image, ct_as_label, ct_as_label, "rather than a segmentation"),
             (image, mr_as_label, mr_as_label, "different values"), (all_nan, label, all_nan, "NaN or infinite")]
    for img, lab, bad, words in cases:
        out = tmp_path / "model"
        rc = main(["finetune", "--base", "none", "--strategy", "scratch", "--image", str(img), "--label", str(lab),
                   "--labels", "liver", "--iterations", "2", "--patch-size", "16", "16", "16", "--output", str(out),
                   "--device", "cpu", "--in-process"])
        err = capsys.readouterr().err
        assert rc == CaseError.exit_code and words in err and str(bad) in err, err
        assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith((".work", ".partial"))]


def test_evaluate_refuses_a_scan_or_a_damaged_file_given_as_the_prediction(tmp_path, capsys):
    reference = SAMPLE / "example_seg.nii.gz"
    for prediction, words in [(SAMPLE / "example_ct_sm.nii.gz", "rather than a segmentation"),
                              (_cut(shutil.copy(reference, tmp_path / "cut.nii.gz")), "incomplete"),
                              (_nan_nifti(tmp_path / "nan.nii.gz", labels=True), "NaN")]:
        rc = main(["evaluate", "--prediction", str(prediction), "--reference", str(reference)])
        err = capsys.readouterr().err
        assert rc == CaseError.exit_code and words in err and str(prediction) in err, err
    assert main(["evaluate", "--prediction", str(reference), "--reference", str(reference)]) == 0


def test_the_good_sample_files_still_read():
    cases = sample_cases()
    image = read_image(cases["ts_ct"].image)
    assert image.GetSize() == (122, 101, 30)
    assert read_labelmap(str(SAMPLE / "example_seg.nii.gz")).image.GetSize() == (122, 101, 30)
