"""The Slicer module's panel: the .ui contract, and the module file importing and setting up.

Slicer itself cannot run here, so the module is imported under a stand-in for the
application layer (``fake_slicer_app``) and the .ui file is loaded with PySide6's
QUiLoader. Together they catch the mistakes that otherwise only show in a user's
Slicer: a widget renamed in one place, a syntax error, a bad import, a parameter
bound to nothing.
"""

import contextlib
import os
import re
import subprocess
import sys
import textwrap
import time
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import fake_slicer_app

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "TransferSeg" / "TransferSeg.py"
UI = ROOT / "Resources" / "UI" / "TransferSeg.ui"

# Naming convention of the panel → the class each widget must have.
SUFFIX_CLASSES = [
    ("CollapsibleButton", "ctkCollapsibleButton"), ("Button", "QPushButton"), ("Selector", "qMRMLNodeComboBox"),
    ("ComboBox", "QComboBox"), ("Table", "QTableWidget"), ("List", "QListWidget"), ("ProgressBar", "QProgressBar"),
    ("SpinBox", "QSpinBox"), ("LineEdit", "QLineEdit"), ("CheckBox", "QCheckBox"), ("Label", "QLabel"),
    ("Widget", "QWidget"),
]
SLICER_ONLY = {"ctkCollapsibleButton", "qMRMLNodeComboBox", "qMRMLWidget"}


def ui_widgets():
    root = ET.parse(UI).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


PANEL_FILES = [MODULE] + sorted((MODULE.parent / "TransferSegPanel").glob("*.py"))


def used_names():
    source = "\n".join(path.read_text(encoding="utf-8") for path in PANEL_FILES)
    return sorted(set(re.findall(r"\bui\.([A-Za-z_]\w*)", source)))


def expected_class(name):
    for suffix, cls in SUFFIX_CLASSES:
        if name.endswith(suffix):
            return cls
    return None


def test_every_widget_the_module_uses_exists_in_the_ui_with_the_expected_class():
    widgets = ui_widgets()
    names = used_names()
    assert len(names) > 20, "the pattern no longer finds the widget names the module uses"
    missing = [n for n in names if n not in widgets]
    assert not missing, f"TransferSeg.py uses widgets missing from {UI.name}: {missing}"
    wrong = {n: widgets[n].get("class") for n in names if expected_class(n) and widgets[n].get("class") != expected_class(n)}
    assert not wrong, f"widgets whose class does not match their name: {wrong}"


def test_workflow_sections_appear_in_order():
    root = ET.parse(UI).getroot()
    sections = [w.findtext("property[@name='text']/string") for w in root.iter("widget")
                if w.get("class") == "ctkCollapsibleButton"]
    assert [s.split(".")[0] for s in sections] == ["1", "2", "3", "4", "5", "6"]
    assert "Base model" in sections[0] and "Predict" in sections[3] and "Review" in sections[4]
    assert "Jobs" in sections[5]


def test_node_selectors_follow_the_scene_and_filter_the_right_nodes():
    root = ET.parse(UI).getroot()
    widgets = ui_widgets()
    receivers = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {n for n, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors and selectors <= receivers, f"selectors without the scene: {selectors - receivers}"
    for name in selectors:
        types_ = [s.text for s in widgets[name].iter("string") if s.text and s.text.startswith("vtkMRML")]
        wanted = "vtkMRMLSegmentationNode" if "Segmentation" in name else "vtkMRMLScalarVolumeNode"
        assert types_ == [wanted], f"{name} lists {types_}"


def test_ui_loads_with_pyside_quiloader_offscreen():
    pytest.importorskip("PySide6", reason="PySide6-Essentials is in the test extra")
    names = used_names()
    script = textwrap.dedent(f"""
        import sys
        from PySide6.QtCore import QFile
        from PySide6.QtUiTools import QUiLoader
        from PySide6.QtWidgets import QApplication, QWidget
        app = QApplication([])
        loader = QUiLoader()
        handle = QFile({str(UI)!r}); handle.open(QFile.ReadOnly)
        root = loader.load(handle)
        if root is None:
            sys.exit("QUiLoader failed: " + loader.errorString())
        for name in {names!r}:
            child = root.findChild(QWidget, name)
            print(name, child.metaObject().className() if child is not None else "MISSING")
    """)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = dict(line.split() for line in done.stdout.splitlines())
    widgets = ui_widgets()
    assert set(loaded) == set(names)
    for name, cls in loaded.items():
        declared = widgets[name].get("class")
        # Slicer's own widgets are unknown to plain Qt: QUiLoader builds their QWidget base.
        assert cls == (("QWidget",) if declared in SLICER_ONLY else (declared,))[0], (name, cls, declared)


def test_module_calls_slicer_util_not_the_copies_only_slicer_core_has():
    allowed = r"util|modules|app|mrmlScene|vtk\w*|qMRML\w*|packaging|ScriptedLoadableModule|parameterNodeWrapper|i18n|selfTests"
    pattern = re.compile(rf"(?<![\w/.])slicer\.(?!(?:{allowed})\b)(\w+)")
    offenders = {}
    scene = sorted((ROOT / "TransferSegLib" / "scene").glob("*.py"))
    assert len(scene) >= 5  # the bridge is where this looks; an empty list would make the check pass vacuously
    for path in PANEL_FILES + scene:
        found = sorted(set(pattern.findall(path.read_text(encoding="utf-8"))))
        if found:
            offenders[path.name] = found
    assert not offenders, f"use slicer.util.<name> (real Slicer has no slicer.<name>): {offenders}"


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.syspath_prepend(str(MODULE.parent))
    with fake_slicer_app.stand_in(str(MODULE)) as app:
        yield app


def test_module_imports_and_sets_up_under_a_stand_in_slicer(stand_in):
    import TransferSeg

    module = TransferSeg.TransferSeg(fake_slicer_app.Anything("module parent"))
    assert module.parent.title == "TransferSeg"
    widget = TransferSeg.TransferSegWidget(fake_slicer_app.Anything("panel"))
    widget.setup()

    assert widget.ui.startButton.connections and widget.ui.predictButton.connections
    assert "cpu" in [data for _, data in widget.ui.deviceComboBox.items]
    assert widget.ui.startButton.text == "Start fine-tuning" and not widget.ui.startButton.enabled  # no cases yet
    assert widget.ui.caseCountLabel.text == "No training cases yet."
    assert not stand_in.messages, stand_in.messages  # no error dialog during set-up
    with pytest.raises(AttributeError, match="no widget named 'noSuchButton'"):
        widget.ui.noSuchButton


def test_every_bound_widget_matches_its_parameter_type(stand_in):
    import TransferSeg

    parameters = TransferSeg.TransferSegParameterNode._annotations
    bound = {w.findtext("property[@name='SlicerParameterName']/string"): w for w in ui_widgets().values()
             if w.find("property[@name='SlicerParameterName']") is not None}
    assert len(bound) >= 10
    compatible = {"QComboBox": str, "QSpinBox": int, "QCheckBox": bool, "QLineEdit": str}
    for parameter, widget in bound.items():
        assert parameter in parameters, f"{widget.get('name')} is bound to unknown parameter '{parameter}'"
        kind = parameters[parameter]
        base = typing.get_args(kind)[0] if typing.get_origin(kind) is typing.Annotated else kind
        cls = widget.get("class")
        if cls == "qMRMLNodeComboBox":
            node_type = [s.text for s in widget.iter("string") if s.text and s.text.startswith("vtkMRML")][0]
            assert base.__name__ == node_type, (parameter, base, node_type)
        else:
            assert compatible[cls] is base, (parameter, cls, base)
    choices = [a for a in typing.get_args(parameters["strategy"])[1:] if isinstance(a, fake_slicer_app.Choice)]
    assert choices and "last-layers" in choices[0].args[0]  # a QComboBox bound to str needs Choice


def test_module_loads_in_a_slicer_without_torch_or_monai(stand_in, monkeypatch):
    for name in ("torch", "monai"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, find_spec says "not installed"
    import TransferSeg

    widget = TransferSeg.TransferSegWidget(fake_slicer_app.Anything("panel"))
    widget.setup()
    assert widget.ui.dependenciesWidget.visible  # offers to install instead of failing
    assert {"torch", "monai"} <= set(widget.logic.missing_dependencies())


@contextlib.contextmanager
def real_mrml_panel(monkeypatch):
    """The widget set up under the stand-in on a fresh real MRML scene: (widget, stand-in, application)."""
    slicer_fixture = pytest.importorskip("slicer_fixture")
    real = pytest.importorskip("slicer")
    application = slicer_fixture.MRMLApplication()
    monkeypatch.setattr(real, "mrmlScene", application.scene, raising=False)
    monkeypatch.setattr(real, "modules", application.modules, raising=False)
    monkeypatch.syspath_prepend(str(MODULE.parent))
    try:
        with fake_slicer_app.stand_in(str(MODULE), mrml=real) as app:
            import TransferSeg

            widget = TransferSeg.TransferSegWidget(fake_slicer_app.Anything("panel"))
            widget.setup()
            yield widget, app, application
    finally:
        application.scene.Clear(1)


def test_panel_lists_cases_and_takes_the_model_of_a_finished_job(monkeypatch, tmp_path):
    """The widget's own code paths with real MRML: a case added, a job followed to its end."""
    with real_mrml_panel(monkeypatch) as (widget, app, application):
        from TransferSegLib.scene.runs import TrainingRun

        volume, segmentation = widget.logic.load_sample_case(["liver"])
        widget._apply(widget.logic.add_case(volume, segmentation, ["liver"]))
        widget._updateGUI()
        assert widget.ui.caseCountLabel.text == "1 case(s)"
        # The same pair again: the stand-in's dialogs answer "no", so nothing is replaced.
        again = widget.logic.add_case(volume, segmentation, ["liver"], widget._scene_cases(), sparse=True)
        assert again.needs_confirmation and "Replace" in again.message
        widget._apply(again)
        assert [c.sparse for c in widget._scene_cases()] == [False]
        assert widget.ui.targetLabelsLabel.text == "liver"
        assert widget.ui.startButton.enabled and widget.ui.casesTable.rowCount == 1

        class FinishedJob:
            def poll(self):
                return [{"kind": "progress", "iteration": 20, "total_iterations": 20, "percent": 100.0, "loss": 0.3},
                        {"kind": "finished", "model": str(tmp_path / "model"), "metrics": {}}]

            def status(self):
                return "finished"

        widget._parameterNode.jobDirectory = str(tmp_path / "job")
        widget.logic.training = TrainingRun(job=FinishedJob(), directory=tmp_path / "job", output=tmp_path / "model",
                                            labels=["liver"])
        widget.onTimer()
        assert widget._parameterNode.lastModel == str(tmp_path / "model")
        assert widget.ui.predictCollapsibleButton.collapsed is False  # a model is ready: Predict opens
        assert widget._parameterNode.modelDirectory == str(tmp_path / "model")
        assert widget._parameterNode.jobDirectory == ""  # nothing left to re-attach to
        assert widget.ui.trainingStatusLabel.text.startswith("Done")
        assert widget.ui.startButton.text == "Start fine-tuning" and widget.ui.finetuneAgainButton.enabled
        assert not app.messages


def test_a_busy_device_queues_the_job_explained_in_the_panel_with_buttons_not_a_shell_command(monkeypatch, tmp_path):
    from TransferSegLib.jobs.lock import DeviceLock

    with real_mrml_panel(monkeypatch) as (widget, app, application):
        assert widget.ui.welcomeLabel.visible and "Start here" in widget.ui.welcomeLabel.text
        # The first view: Predict and Review fold until there is a model and a prediction.
        assert widget.ui.predictCollapsibleButton.collapsed and widget.ui.reviewCollapsibleButton.collapsed
        volume, segmentation = widget.logic.load_sample_case(["liver"])
        widget._apply(widget.logic.add_case(volume, segmentation, ["liver"]))
        widget._updateGUI()
        assert not widget.ui.welcomeLabel.visible  # the first step is done
        p = widget._parameterNode
        p.device, p.strategy = "cpu", "scratch"
        application.modules.plots = fake_slicer_app.Anything("plots")  # the Plots module: application only
        with DeviceLock("cpu", str(tmp_path / "jobs" / "someone-elses-job")):
            widget._start("none")
            widget._updateGUI()
            run = widget.logic.training
            assert run is not None and run.queued and not app.messages  # queued, no error dialog
            assert widget.ui.busyDeviceWidget.visible and widget.ui.startButton.text == "Stop"
            assert widget.ui.busyDeviceLabel.text.startswith("Waiting for cpu: the job 'someone-elses-job'")
            assert "transferseg job" not in widget.ui.busyDeviceLabel.text
            assert "someone-elses-job" in widget.ui.trainingStatusLabel.text
            widget.onStartStop()  # Stop: the waiting job is cancelled
            deadline = time.monotonic() + 240
            while run.running:  # the panel's timer follows it to its end
                assert time.monotonic() < deadline, "the queued job did not stop"
                widget.onTimer()
                time.sleep(0.5)
        assert run.state == "cancelled"
        assert not widget.ui.busyDeviceWidget.visible and widget.ui.startButton.text == "Start fine-tuning"


def test_a_multi_channel_model_gets_one_volume_selector_per_channel(monkeypatch, tmp_path):
    """BraTS reads T1c, T1, T2, FLAIR: the case takes one volume each (a moved one is refused by name);
    a two-channel model to predict with takes two volumes; a one-channel model hides them all."""
    import numpy as np

    from TransferSegLib.data.recipe import Recipe
    from TransferSegLib.model_card import ModelCard
    from TransferSegLib.specs import NetworkSpec

    with real_mrml_panel(monkeypatch) as (widget, app, application):
        import slicer as real  # slicer-core, under the stand-in's application parts
        import TransferSegPanel.cases

        p = widget._parameterNode
        p.baseModel = "brats_mri_segmentation"
        widget._updateGUI()
        rows = widget._case_channels.rows
        assert widget.ui.caseChannelsWidget.visible and widget.ui.caseVolumeLabel.text == "Volume (T1c):"
        assert [label.text for label, _ in rows] == ["T1:", "T2:", "FLAIR:"] and all(c.visible for _, c in rows)
        assert not widget.ui.predictChannelsWidget.visible and widget.ui.targetVolumeLabel.text == "Volume:"

        matrix = np.diag([-1.0, -1.0, 2.0, 1.0])
        voxels = np.random.default_rng(0).integers(0, 400, (12, 16, 16)).astype(np.int16)
        t1c, t1, t2, flair = (real.util.addVolumeFromArray(voxels + k, ijkToRAS=matrix, name=n)
                              for k, n in enumerate(("T1c", "T1", "T2", "FLAIR")))
        seg = application.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "tumour")
        seg.SetReferenceImageGeometryParameterFromVolumeNode(t1c)
        segment = seg.GetSegmentation().AddEmptySegment("tumor_core", "tumor_core")
        mask = np.zeros(voxels.shape, np.uint8)
        mask[3:8, 4:10, 4:10] = 1
        real.util.updateSegmentBinaryLabelmapFromArray(mask, seg, segment, t1c)
        p.caseVolume, p.caseSegmentation = t1c, seg
        monkeypatch.setattr(TransferSegPanel.cases, "ticked", lambda widget: ["tumor_core"])
        shifted = matrix.copy()
        shifted[0, 3] = 5.0
        moved = real.util.addVolumeFromArray(voxels, ijkToRAS=shifted, name="FLAIR moved")
        for (_, combo), node in zip(rows, (t1, t2, moved)):
            combo.currentNode = lambda node=node: node
        widget.onAddCase()
        assert p.cases == [] and "'FLAIR moved' (FLAIR) is not on the grid of 'T1c' (T1c)" in app.messages[-1]
        rows[2][1].currentNode = lambda: flair
        widget.onAddCase()
        [case] = widget._scene_cases()
        assert case.volumes == [t1c, t1, t2, flair] and case.channel_names == ["T1c", "T1", "T2", "FLAIR"]

        model = tmp_path / "ct-pet"
        model.mkdir()
        ModelCard(name="ct pet", network=NetworkSpec("monai.networks.nets.DynUNet", {"in_channels": 2, "out_channels": 2}),
                  labels=["background", "lesion"], recipe=Recipe(), patch_size=(64, 64, 32),
                  input_channels=["CT", "PET"]).save(model)
        p.baseModel, p.modelDirectory = "default", str(model)
        widget._updateGUI()
        assert not widget.ui.caseChannelsWidget.visible and widget.ui.caseVolumeLabel.text == "Volume:"
        assert not any(c.visible for _, c in rows)
        assert widget.ui.predictChannelsWidget.visible and widget.ui.targetVolumeLabel.text == "Volume (CT):"
        assert [label.text for label, c in widget._predict_channels.rows if c.visible] == ["PET:"]
