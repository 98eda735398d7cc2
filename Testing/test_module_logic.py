"""The module's Logic against real MRML: the panel's whole workflow without the panel.

Workers run as real subprocesses of this Python (the Logic takes the interpreter
as a parameter, as Slicer's ``PythonSlicer`` is injected in the application).
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest

import fake_slicer_app
from slicer_fixture import mrml_scene  # noqa: F401  (pytest fixture)

import slicer  # noqa: E402

from TransferSegLib.data.recipe import Recipe  # noqa: E402
from TransferSegLib.errors import CaseError, TransferSegError  # noqa: E402
from TransferSegLib.model_card import ModelCard  # noqa: E402
from TransferSegLib.scene import SceneCase, find_segment_id, segment_mask, segment_names  # noqa: E402
from TransferSegLib.scene.logic import TransferSegLogic  # noqa: E402
from TransferSegLib.scene.plot import TrainingPlot  # noqa: E402
from TransferSegLib.scene.runs import TrainingRun, describe_error  # noqa: E402
from TransferSegLib.scene.process import CommandProcess  # noqa: E402
from TransferSegLib.specs import NetworkSpec  # noqa: E402

MODULE = Path(__file__).resolve().parent.parent / "TransferSeg" / "TransferSeg.py"


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


def test_model_list_offers_default_earlier_fine_tunes_and_scratch_without_torch(logic, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # the list must show before dependencies exist
    mine = tmp_path / "home" / "models" / "liver-round-1"
    mine.mkdir(parents=True)
    ModelCard(name="liver round 1", network=NetworkSpec("monai.networks.nets.DynUNet", {"out_channels": 2}),
              labels=["background", "liver"], recipe=Recipe(), patch_size=(64, 64, 32), modality="CT").save(mine)
    rows = logic.base_models()
    names = [r.name for r in rows]
    assert names[0] == "default" and rows[0].source == "shipped" and rows[0].cached
    catalog_rows = [r for r in rows if r.source == "catalog"]
    assert "spleen_ct_segmentation" in [r.name for r in catalog_rows] and len(catalog_rows) >= 5
    assert next(r for r in catalog_rows if r.name == "spleen_ct_segmentation").classes == ["spleen"]
    assert "spleen" in rows[0].classes and "background" not in rows[0].classes
    mine_row = rows[names.index(str(mine))]
    assert mine_row.title == "liver round 1" and mine_row.classes == ["liver"]
    assert names[-1] == "none"


def test_catalog_models_show_license_and_download_state_and_a_broken_catalog_hides_only_itself(logic, monkeypatch):
    from TransferSegLib.data.recipe import Recipe
    from TransferSegLib.errors import ModelError
    from TransferSegLib.models import catalog
    from TransferSegLib.specs import NetworkSpec

    entry = catalog.CatalogEntry(
        name="organs-nc", network=NetworkSpec("monai.networks.nets.BasicUNet", {"spatial_dims": 3, "out_channels": 3}),
        labels=["background", "liver", "spleen"], recipe=Recipe(), patch_size=(64, 64, 32),
        title="Organs (research only)", modality="CT", license="CC-BY-NC-4.0", non_commercial=True,
        url="http://127.0.0.1:9/organs-nc.pt", sha256="sha256:" + "0" * 64)  # never downloaded here
    monkeypatch.setattr(catalog, "list_models", lambda *a, **k: [entry])
    row = next(r for r in logic.base_models() if r.name == "organs-nc")
    assert not row.cached and row.non_commercial and row.classes == ["liver", "spleen"]

    def broken(*a, **k):
        raise ModelError("The model catalog is missing.")

    monkeypatch.setattr(catalog, "list_models", broken)
    assert [r.name for r in logic.base_models()][0] == "default"


def test_scratch_base_needs_the_scratch_strategy(logic):
    volume, segmentation = logic.load_sample_case(["liver"])
    case = logic.make_case(volume, segmentation, ["liver"])
    with pytest.raises(TransferSegError, match="pick a base model, or the 'scratch' strategy"):
        logic.start_finetune([case], base="none", strategy="last-layers")


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


class ScriptedJob:
    """A job whose events are given: the panel-side bookkeeping without a worker."""

    def __init__(self, batches, state="running"):
        self.batches, self.state, self.cancelled = list(batches), state, False

    def poll(self):
        return self.batches.pop(0) if self.batches else []

    def status(self):
        return self.state

    def cancel(self):
        self.cancelled = True


def test_status_line_shows_progress_loss_dice_and_time_left(logic, tmp_path):
    logic.training = TrainingRun(job=ScriptedJob([[
        {"kind": "started", "device": "cpu"},
        {"kind": "progress", "iteration": 40, "total_iterations": 200, "percent": 20.0, "loss": 0.4321, "eta_s": 300},
        {"kind": "validation", "iteration": 40, "dice": {"liver": 0.8}, "mean_dice": 0.8},
    ]]), directory=tmp_path, output=tmp_path / "model", labels=["liver"], plot=TrainingPlot())
    logic.poll_training()
    run = logic.training
    assert run.running and run.percent() == 20
    assert run.status_line() == "iteration 40/200, loss 0.432, Dice 0.800, about 5 min left"
    assert run.plot.points() == {"loss": 1, "dice": 1}


def test_worker_that_dies_without_a_last_event_is_reported_not_awaited(logic, tmp_path):
    job = ScriptedJob([[{"kind": "progress", "iteration": 3, "percent": 1.0}]], state="running")
    logic.training = TrainingRun(job=job, directory=tmp_path, output=tmp_path / "model", labels=["liver"])
    logic.poll_training()
    assert logic.training.running
    job.state = "failed"  # killed by the OS: no error event was written
    logic.poll_training()
    assert logic.training.state == "failed" and str(tmp_path) in logic.training.error
    with pytest.raises(TransferSegError, match="stopped without a result"):
        logic.wait_for_training(timeout=5)


def test_error_event_ends_the_run_with_its_hint(logic, tmp_path):
    logic.training = TrainingRun(job=ScriptedJob([[{"kind": "error", "type": "OutOfMemory", "message": "The GPU ran out of memory.",
                                                    "hint": "Lower the patch size or pick the CPU."}]]),
                                 directory=tmp_path, output=tmp_path / "model", labels=["liver"])
    logic.poll_training()
    assert logic.training.state == "failed"
    assert logic.training.status_line() == "The GPU ran out of memory. Lower the patch size or pick the CPU."


def test_failed_prediction_shows_the_command_lines_own_message(logic, tmp_path):
    volume, _ = logic.load_sample_case(["liver"])
    model = tmp_path / "broken-model"
    model.mkdir()
    ModelCard(name="broken", network=NetworkSpec("monai.networks.nets.DynUNet", {"out_channels": 2}),
              labels=["background", "liver"], recipe=Recipe(), patch_size=(64, 64, 32)).save(model)  # no model.pt
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
    assert not any(_alive(psutil, c.pid) for c in children)


def _alive(psutil, pid) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_self_test_runs_the_whole_loop_on_sample_data_against_real_mrml(mrml_scene, monkeypatch):
    """The acceptance loop: the module's own self-test (fine-tune with a tiny budget → predict →
    correct → fine-tune again from the new model), run through the Logic on real MRML with the
    application layer stood in. It leaves the prediction as a segmentation node in the scene."""
    pytest.importorskip("TransferSegLib.jobs.api", reason="the job layer is not there yet")
    monkeypatch.syspath_prepend(str(MODULE.parent))
    with fake_slicer_app.stand_in(str(MODULE), mrml=slicer) as app:
        import TransferSeg

        TransferSeg.TransferSegTest().runTest()
        assert not app.messages
    names = [slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode").GetName()
             for i in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]
    assert any(name.startswith("TransferSeg sample CT – ") for name in names), names


def test_running_job_is_reattached_from_the_saved_scene_and_cancelled(logic, mrml_scene, tmp_path):
    """Slicer restarts while a job trains: the saved scene leads back to it, and Stop still stops it."""
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("TransferSegLib.jobs.api", reason="the job layer is not there yet")
    volume, segmentation = logic.load_sample_case(["liver"])
    settings = dict(logic.smoke_test_settings(), iterations=5000)
    run = logic.start_finetune([logic.make_case(volume, segmentation, ["liver"])], **settings)
    # What the panel's parameter node stores (parameterNodeWrapper keeps a str under its name).
    logic.getParameterNode().SetParameter("jobDirectory", str(run.directory))
    scene_file = tmp_path / "saved.mrml"
    mrml_scene.scene.SetURL(str(scene_file))
    assert mrml_scene.scene.Commit()

    reopened = type(mrml_scene)()  # a new Slicer session: a fresh scene and a fresh Logic
    slicer.mrmlScene = reopened.scene
    reopened.scene.SetURL(str(scene_file))
    assert reopened.scene.Connect()
    restarted = TransferSegLogic(python=sys.executable, work_root=str(tmp_path / "home"))
    directory = restarted.getParameterNode().GetParameter("jobDirectory")
    assert directory == str(run.directory)

    attached = restarted.attach_training(directory)
    assert attached.running and attached.labels == ["liver"]
    worker = attached.job.pid
    restarted.cancel_training()
    stopped = restarted.wait_for_training(timeout=120)
    assert stopped.state == "cancelled" and not stopped.model
    deadline = time.monotonic() + 30  # the state is written just before the process exits
    while worker and _alive(psutil, worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker or not _alive(psutil, worker)
    reopened.scene.Clear(1)
    slicer.mrmlScene = mrml_scene.scene


def test_models_are_cached_in_slicers_cache_folder_unless_the_user_chose_one(mrml_scene, tmp_path, monkeypatch):
    import slicer
    from types import SimpleNamespace

    from TransferSegLib.models.download import cache_dir

    monkeypatch.delenv("TRANSFERSEG_CACHE", raising=False)
    monkeypatch.setattr(slicer, "app", SimpleNamespace(cachePath=str(tmp_path / "SlicerCache")), raising=False)
    logic = TransferSegLogic(python=sys.executable, work_root=str(tmp_path / "home"))
    assert logic.cache == tmp_path / "SlicerCache" / "TransferSeg"
    assert cache_dir() == logic.cache  # what the catalog and the worker processes (same environment) use
    monkeypatch.setenv("TRANSFERSEG_CACHE", str(tmp_path / "mine"))
    assert TransferSegLogic(python=sys.executable, work_root=str(tmp_path / "home")).cache == tmp_path / "mine"
