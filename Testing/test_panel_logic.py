"""The panel's Logic on real MRML (slicer-core): corrections, replacing cases, sparse slices, the Jobs section.

Each test drives ``TransferSegLogic`` the way the panel's slots do; workers are real
subprocesses of this Python (the Logic takes the interpreter, as Slicer injects
``PythonSlicer``).
"""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from slicer_fixture import mrml_scene  # noqa: F401  (pytest fixture)

import slicer  # noqa: E402

from TransferSegLib.errors import CaseError, JobError  # noqa: E402
from TransferSegLib.names import label_color  # noqa: E402
from TransferSegLib.scene import import_prediction, segment_names  # noqa: E402
from TransferSegLib.scene.geometry import volume_from_image  # noqa: E402
from TransferSegLib.scene.logic import TransferSegLogic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def logic(mrml_scene, tmp_path):
    return TransferSegLogic(python=sys.executable, work_root=str(tmp_path / "home"))


def small_ct(size=(24, 20, 16)):
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(-200, 200, size[::-1]).astype(np.int16))
    image.SetSpacing((1.5, 1.5, 3.0))
    image.SetOrigin((10.0, -20.0, 5.0))
    return image


def drawn(volume, segments, name="drawn"):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    for index, (segment, mask) in enumerate(segments.items(), start=1):
        segment_id = node.GetSegmentation().AddEmptySegment(segment, segment, label_color(segment, index))
        if mask is not None:
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), node, segment_id, volume)
    return node


def brick(shape, start, stop):
    mask = np.zeros(shape, np.uint8)
    mask[tuple(slice(a, b) for a, b in zip(start, stop))] = 1
    return mask


def predicted(volume, tmp_path, voxels, labels):
    path = tmp_path / "prediction.nii.gz"
    image = sitk.GetImageFromArray(voxels.astype(np.uint8))
    image.CopyInformation(small_ct())
    sitk.WriteImage(image, str(path))
    return import_prediction(path, volume, "organs", labels)


# --- corrections: only reviewed classes are ground truth ---------------------------------------------


def test_only_the_reviewed_classes_of_a_prediction_become_ground_truth(logic, tmp_path):
    image = small_ct()
    volume = volume_from_image(image, "ct 7")
    voxels = np.zeros(image.GetSize()[::-1], np.uint8)
    voxels[2:8, 2:8, 2:8] = 1  # liver, reviewed and corrected below
    voxels[9:14, 10:15, 10:18] = 2  # spleen, never looked at
    node = predicted(volume, tmp_path, voxels, ["background", "liver", "spleen"])
    liver = voxels == 1
    liver[8:10, 2:8, 2:8] = True  # the user paints what the model missed
    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName("liver")
    slicer.util.updateSegmentBinaryLabelmapFromArray(liver.astype(np.uint8), node, segment_id, volume)

    with pytest.raises(CaseError, match="tick the segments you reviewed"):
        logic.add_correction(node, None)  # a prediction is never taken whole
    with pytest.raises(CaseError, match="No segment .* reviewed"):
        logic.add_correction(node, [])
    added = logic.add_correction(node, ["liver"])
    assert added.case.volume is volume and added.case.segments == ["liver"] and len(added.cases) == 1

    run = logic.start_finetune(added.cases, base="none", strategy="scratch", iterations=1, time_budget_s=None)
    logic.cancel_training()
    spec = json.loads((run.directory / "spec.json").read_text())
    case = spec["cases"][0]
    assert case["annotated"] == ["liver"]
    written = sitk.GetArrayFromImage(sitk.ReadImage(case["label"]))
    np.testing.assert_array_equal(written == 1, liver)
    assert set(np.unique(written)) == {0, 1}  # the unreviewed spleen is not written as anything
    logic.wait_for_training(timeout=120) if logic.training.running else None


def test_a_case_with_the_same_nodes_is_replaced_only_after_confirmation(logic):
    image = small_ct()
    volume = volume_from_image(image, "ct")
    shape = image.GetSize()[::-1]
    seg = drawn(volume, {"liver": brick(shape, (2, 2, 2), (6, 8, 8)), "kidney": brick(shape, (8, 8, 8), (12, 12, 12))})
    first = logic.add_case(volume, seg, ["liver", "kidney"])
    assert not first.needs_confirmation and [c.segments for c in first.cases] == [["liver", "kidney"]]
    second = logic.add_case(volume, seg, ["liver"], first.cases)
    assert second.needs_confirmation and "already a training case" in second.message
    assert [c.segments for c in second.cases] == [["liver", "kidney"]]  # unchanged until the user agrees
    third = logic.add_case(volume, seg, ["liver"], first.cases, replace=True)
    assert third.replaced and [c.segments for c in third.cases] == [["liver"]]
    agreed = logic.confirm_replace(second)  # what the panel does once the user said yes
    assert agreed.replaced and [c.segments for c in agreed.cases] == [["liver"]]


def test_empty_ticked_segments_are_named_and_default_ticks_are_the_non_empty_ones(logic):
    from TransferSegLib.scene import non_empty_segments

    image = small_ct()
    volume = volume_from_image(image, "ct")
    shape = image.GetSize()[::-1]
    seg = drawn(volume, {"liver": brick(shape, (2, 2, 2), (6, 8, 8)), "tumor": None, "spleen": None})
    assert non_empty_segments(seg, volume) == ["liver"]
    with pytest.raises(CaseError, match="'tumor', 'spleen' of 'drawn' are empty"):
        logic.add_case(volume, seg, ["liver", "tumor", "spleen"])


# --- sparse annotation ---------------------------------------------------------------------------------


def test_a_case_drawn_on_every_fourth_slice_is_annotated_on_those_slices_only(logic, tmp_path):
    from TransferSegLib.specs import Case
    from TransferSegLib.data.cases import load_case

    image = small_ct(size=(24, 20, 16))
    volume = volume_from_image(image, "ct")
    shape = image.GetSize()[::-1]  # (16, 20, 24)
    organ = brick(shape, (2, 4, 4), (14, 16, 20))
    sparse = np.zeros_like(organ)
    sparse[2:14:4] = organ[2:14:4]  # slices 2, 6, 10 drawn
    seg = drawn(volume, {"liver": sparse})
    added = logic.add_case(volume, seg, ["liver"], sparse=True)
    assert added.case.slices == 3 and "3 of 16 slices (k axis)" in added.message
    run = logic.start_finetune(added.cases, base="none", strategy="scratch", iterations=1, time_budget_s=None)
    logic.cancel_training()
    entry = json.loads((run.directory / "spec.json").read_text())["cases"][0]
    region = sitk.GetArrayFromImage(sitk.ReadImage(entry["region"]))
    assert region[2::4][:3].all() and region.sum() == 3 * 20 * 24
    loaded = load_case(Case.from_dict(entry), ["background", "liver"])  # the engine reads the region as the annotated voxels
    assert int(sitk.GetArrayViewFromImage(loaded.region).sum()) == 3 * 20 * 24
    logic.wait_for_training(timeout=120) if logic.training.running else None


# --- the Jobs section ----------------------------------------------------------------------------------


def test_jobs_are_listed_followed_cancelled_resumed_and_deleted(logic, tmp_path):
    pytest.importorskip("psutil")
    image = small_ct()
    volume = volume_from_image(image, "ct")
    seg = drawn(volume, {"liver": brick(image.GetSize()[::-1], (2, 2, 2), (10, 12, 12))})
    cases = logic.add_case(volume, seg, ["liver"]).cases
    run = logic.start_finetune(cases, base="none", strategy="scratch", iterations=100000, time_budget_s=None,
                               train={"patch_size": [16, 16, 16], "batch_size": 1, "val_every": 100000})
    rows = logic.jobs.rows()
    assert [r.directory for r in rows] == [str(run.directory)] and rows[0].running

    other = TransferSegLogic(python=sys.executable, work_root=str(tmp_path / "home"))  # Slicer restarted
    followed = other.attach_training(run.directory)
    assert followed.running and followed.labels == ["liver"]
    with pytest.raises(JobError, match="cancel it first"):
        other.delete_job(run.directory)
    other.cancel_job(run.directory)
    assert other.wait_for_training(timeout=180).state == "cancelled"
    assert logic.jobs.row(run.directory).state == "cancelled"

    resumed = other.resume_training(run.directory)
    assert resumed.running and other.jobs.row(run.directory).running
    other.cancel_job(run.directory)
    assert other.wait_for_training(timeout=180).state == "cancelled"
    other.delete_job(run.directory)
    assert not run.directory.exists() and other.jobs.rows() == []


def test_a_busy_device_queues_the_job_naming_the_holder_and_stop_cancels_it(logic, tmp_path, monkeypatch):
    from TransferSegLib.jobs.lock import DeviceLock

    image = small_ct()
    volume = volume_from_image(image, "ct")
    seg = drawn(volume, {"liver": brick(image.GetSize()[::-1], (2, 2, 2), (10, 12, 12))})
    cases = logic.add_case(volume, seg, ["liver"]).cases
    monkeypatch.setenv("TRANSFERSEG_HOME", str(tmp_path / "home"))
    with DeviceLock("cpu", str(tmp_path / "home" / "jobs" / "the-other-job")):
        busy = logic.jobs.busy("cpu")
        assert busy is not None and busy.job.endswith("the-other-job")
        run = logic.start_finetune(cases, base="none", strategy="scratch", iterations=1, device="cpu")
        assert run.running and run.queued  # started, not refused: it waits for the device
        assert run.status_line().startswith("Waiting for cpu: the job 'the-other-job'")
        deadline = time.monotonic() + 240
        while logic.jobs.row(run.directory).state != "queued" or not any(  # the worker itself is waiting
                e.get("kind") == "queued" for e in run.job.events()):
            assert time.monotonic() < deadline, "the worker never reached the device queue"
            assert logic.poll_training() is not None and run.running, run.error
            time.sleep(0.5)
        logic.poll_training()
        assert run.queued and "the-other-job" in run.status_line()
        assert logic.jobs.row(run.directory).status_text() == "waiting for cpu"  # the Jobs table's words
        logic.cancel_training()  # what Stop does
        assert logic.wait_for_training(timeout=120).state == "cancelled"
    assert logic.jobs.row(run.directory).state == "cancelled" and not run.queued
    assert not (run.directory / "checkpoints" / "checkpoint_last.pt").exists()  # it never trained


# --- Slicer's process never imports torch --------------------------------------------------------------


def test_the_panel_logic_never_imports_torch_or_monai(tmp_path):
    """The panel's set-up, model list, model card, case check and export, job start, comparison: all
    without torch or MONAI in this process (the workers import them)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'Testing')!r}]
        import numpy as np
        import slicer
        from slicer_fixture import MRMLApplication
        application = MRMLApplication()
        slicer.mrmlScene, slicer.modules = application.scene, application.modules
        from TransferSegLib.scene.logic import TransferSegLogic
        from TransferSegLib.scene.runs import read_model_card
        logic = TransferSegLogic(python=sys.executable, work_root={str(tmp_path / 'home')!r})
        rows = logic.base_models()
        assert logic.model_channels("brats_mri_segmentation") == (["T1c", "T1", "T2", "FLAIR"], 4)
        read_model_card(logic.requirements_path().replace("requirements.txt", "Models/default"))
        volume, segmentation = logic.load_sample_case(["liver", "spleen"])
        added = logic.add_case(volume, segmentation, ["liver", "spleen"], sparse=True)
        run = logic.start_finetune(added.cases, base="default", strategy="last-layers", iterations=1)
        logic.cancel_training()
        reference = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reference")
        reference.Copy(segmentation)
        task = logic.start_comparison(segmentation, reference, volume)
        task.process.wait(300)
        assert task.poll(), task.error
        assert sorted(r["label"] for r in task.result) == ["liver", "spleen"], task.result
        assert all(r["dice"] == 1.0 and r["hd95"] == 0.0 for r in task.result), task.result
        logic.wait_for_training(timeout=300) if logic.training.running else None
        import fake_slicer_app  # the widget's own set-up: model table, jobs table, devices, cases
        sys.path.insert(0, {str(ROOT / 'TransferSeg')!r})
        with fake_slicer_app.stand_in({str(ROOT / 'TransferSeg' / 'TransferSeg.py')!r}, mrml=slicer):
            import TransferSeg
            widget = TransferSeg.TransferSegWidget(fake_slicer_app.Anything("panel"))
            widget.setup()
            widget._updateGUI()
        catalog_rows = [r.name for r in rows if r.source == "catalog"]
        assert "spleen_ct_segmentation" in catalog_rows and len(catalog_rows) >= 5, [r.name for r in rows]
        print("rows", len(rows), "torch" in sys.modules, "monai" in sys.modules)
        application.scene.Clear(1)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.endswith("False False"), f"torch or monai was imported into the panel's process: {last}"


def test_validation_cases_are_the_ones_ticked_and_never_a_silent_hold_out(logic):
    from TransferSegLib.scene.training_logic import validation_note

    cases = []
    for n in range(3):
        image = small_ct()
        volume = volume_from_image(image, f"ct {n}")
        seg = drawn(volume, {"liver": brick(image.GetSize()[::-1], (2, 2, 2), (10, 12, 12))}, name=f"seg {n}")
        cases = logic.add_case(volume, seg, ["liver"], cases).cases
    assert "training case(s) themselves" in validation_note(cases)
    run = logic.start_finetune(cases, base="none", strategy="scratch", iterations=1, time_budget_s=None)
    logic.cancel_training()
    spec = json.loads((run.directory / "spec.json").read_text())
    assert [c["name"] for c in spec["val_cases"]] == [c["name"] for c in spec["cases"]] == ["ct_0", "ct_1", "ct_2"]
    logic.wait_for_training(timeout=120) if logic.training.running else None

    cases[1].validation = True
    assert validation_note(cases).startswith("Validation on ct 1 (not trained on)")
    run = logic.start_finetune(cases, base="none", strategy="scratch", iterations=1, time_budget_s=None)
    logic.cancel_training()
    spec = json.loads((run.directory / "spec.json").read_text())
    assert [c["name"] for c in spec["cases"]] == ["ct_0", "ct_2"] and [c["name"] for c in spec["val_cases"]] == ["ct_1"]
    logic.wait_for_training(timeout=120) if logic.training.running else None
    for case in cases:
        case.validation = True
    with pytest.raises(JobError, match="untick at least one"):
        logic.start_finetune(cases, base="none", strategy="scratch", iterations=1)


def test_background_download_reports_percent_past_2_gib_and_cancels_at_once(tmp_path):
    """A download runs as a worker; its progress is a percentage (a 3 GB model must not overflow a
    QProgressBar's int), and Cancel kills it without waiting."""
    from TransferSegLib.scene.tasks import BackgroundTask

    launcher = tmp_path / "python"  # stands for PythonSlicer running 'transferseg models download'
    launcher.write_text("#!/bin/sh\nprintf '\\r  2500.0 / 3000.0 MB (83%%)' >&2\nsleep 60\n")
    launcher.chmod(0o755)
    task = BackgroundTask("download", ["models", "download", "big"], tmp_path / "task", python=str(launcher))
    deadline = time.monotonic() + 10
    while task.percent() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert task.percent() == 83 and task.progress_text() == "2500.0 of 3000.0 MB" and task.poll() is None
    started = time.monotonic()
    task.cancel()
    assert time.monotonic() - started < 5 and task.process.poll() is not None
    assert task.poll() is False and "cancelled" in str(task.error)
