"""The module's Logic against real MRML: the panel's whole workflow without the panel.

Workers run as real subprocesses of this Python (the Logic takes the interpreter
as a parameter, as Slicer's ``PythonSlicer`` is injected in the application).
"""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from slicer_fixture import mrml_scene  # noqa: F401  (pytest fixture)

import slicer  # noqa: E402

from TransferSegLib.errors import CaseError, TransferSegError  # noqa: E402
from TransferSegLib.scene import SceneCase, find_segment_id, segment_mask, segment_names  # noqa: E402
from TransferSegLib.scene_logic import TransferSegLogic, describe_error  # noqa: E402
from TransferSegLib.scene_process import CommandProcess, kill_tree  # noqa: E402


@pytest.fixture
def logic(mrml_scene, tmp_path):
    return TransferSegLogic(python=sys.executable, work_root=str(tmp_path / "home"))


def test_logic_keeps_its_parameter_node_in_the_scene(logic):
    node = logic.getParameterNode()
    assert node.IsA("vtkMRMLScriptedModuleNode")
    assert logic.getParameterNode() is node  # one per scene: saved and restored with it


def test_sample_case_loads_as_a_volume_and_a_liver_segmentation(logic):
    volume, segmentation = logic.load_sample_case(["liver"])
    assert volume.GetImageData().GetDimensions() == (122, 101, 30)
    assert segment_names(segmentation) == ["liver"]
    assert segment_mask(segmentation, find_segment_id(segmentation, "liver"), volume).sum() > 1000


def test_devices_always_offer_automatic_and_cpu():
    devices = TransferSegLogic.available_devices()
    assert devices[0][0] == "auto" and devices[-1][0] == "cpu"
    assert all(d.startswith("cuda:") for d, _ in devices[1:-1])


def test_bad_case_fails_before_any_job_or_file_exists(logic, tmp_path):
    volume, segmentation = logic.load_sample_case(["liver"])
    segmentation.GetSegmentation().AddEmptySegment("spleen", "spleen", (0.6, 0.4, 0.6))
    with pytest.raises(CaseError, match="'spleen'.*empty"):
        logic.start_finetune([SceneCase(volume, segmentation, ["liver", "spleen"])], base="none", strategy="scratch")
    assert not (tmp_path / "home" / "jobs").exists()
    assert logic.training is None


def test_error_events_say_what_happened_and_what_to_do():
    event = {"kind": "error", "type": "OutOfMemory", "message": "The GPU ran out of memory.",
             "hint": "Use a smaller patch size or the CPU."}
    assert describe_error(event) == "The GPU ran out of memory. Use a smaller patch size or the CPU."


def test_failed_prediction_shows_the_command_lines_own_message(logic, tmp_path):
    volume, _ = logic.load_sample_case(["liver"])
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"format": "transferseg-model", "labels": ["background", "liver"]}))
    before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    with pytest.raises(TransferSegError, match="model.pt"):
        logic.predict(volume, model, device="cpu", timeout=120)
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == before


def test_cancel_kills_the_whole_process_tree(tmp_path):
    psutil = pytest.importorskip("psutil")
    launcher = tmp_path / "python"  # stands for PythonSlicer: a launcher whose child does the work
    launcher.write_text("#!/bin/sh\nsleep 60 &\nwait\n")
    launcher.chmod(0o755)
    process = CommandProcess(["predict"], tmp_path / "log.txt", python=str(launcher))
    deadline = time.monotonic() + 10
    while not psutil.Process(process.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    children = psutil.Process(process.pid).children(recursive=True)
    assert children, "the launcher did not start its child"
    process.cancel()
    assert process.poll() is not None
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_kill_tree_ignores_a_finished_process():
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    kill_tree(done.pid)  # no error


def test_fine_tune_predict_loop_on_sample_data_leaves_a_segmentation_node(logic, mrml_scene):
    """The acceptance loop: fine-tune (tiny budget) → predict → correct → fine-tune again."""
    pytest.importorskip("TransferSegLib.jobs.api", reason="the job layer is not there yet")
    volume, segmentation = logic.load_sample_case(["liver"])
    mrml_scene.add_to_study(volume, segmentation)
    case = logic.make_case(volume, segmentation, ["liver"])
    settings = logic.smoke_test_settings()

    run = logic.start_finetune([case], **settings)
    assert run.running and run.directory.is_dir()
    seen = []
    finished = logic.wait_for_training(timeout=300, on_events=seen.extend)
    assert finished.state == "finished", finished.error
    kinds = [e.get("kind") or e.get("event") for e in seen]
    assert "started" in kinds and "progress" in kinds and "finished" in kinds
    assert finished.plot.points()["loss"] > 0  # the live plot got the loss curve
    assert finished.labels == ["liver"]

    prediction = logic.predict(volume, finished.model, device="cpu", timeout=300)
    assert prediction.IsA("vtkMRMLSegmentationNode") and prediction is not segmentation
    assert segment_names(prediction) == ["liver"]
    assert volume.GetName() in prediction.GetName()
    assert segment_names(segmentation) == ["liver"]  # the user's segmentation is untouched

    reference = segment_mask(segmentation, find_segment_id(segmentation, "liver"), volume)
    slicer.util.updateSegmentBinaryLabelmapFromArray(reference.astype(np.uint8), prediction,
                                                     find_segment_id(prediction, "liver"), volume)
    corrected = logic.case_from_correction(prediction)
    assert corrected.volume is volume and corrected.segments == ["liver"]
    again = dict(settings, base=finished.model, iterations=5)
    logic.start_finetune([case, corrected], **again)
    second = logic.wait_for_training(timeout=300)
    assert second.state == "finished", second.error
    assert second.model != finished.model
