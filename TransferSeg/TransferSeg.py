"""TransferSeg: fine-tune a pretrained 3D segmentation model on a few cases, in Slicer.

The panel follows the workflow: (1) base model, (2) training cases, (3) fine-tune,
(4) predict, (5) review and iterate. It only binds the GUI to the parameter node
and to the Logic (``TransferSegLib.scene.logic``), which runs everything in
background processes and can be used from the Python console without the panel.
This file imports neither torch nor monai: they are installed on first use.
"""

import logging
import os
import sys
import traceback
from typing import Annotated, List

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper, parameterPack
from slicer.util import VTKObservationMixin
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode


def _make_library_importable() -> None:
    """In a source checkout TransferSegLib sits next to this folder, not inside it."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(folder, "TransferSegLib")) and folder not in sys.path:
            sys.path.insert(0, folder)
            return


_make_library_importable()

from TransferSegLib.errors import TransferSegError  # noqa: E402
from TransferSegLib.scene import SceneCase, segment_names, training_labels  # noqa: E402
from TransferSegLib.scene.logic import STRATEGIES, TransferSegLogic, read_model_card  # noqa: E402

POLL_INTERVAL_MS = 1000


class TransferSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("TransferSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["TransferSeg contributors"]
        self.parent.helpText = _(
            "Fine-tune a pretrained 3D segmentation network on a few annotated cases, predict new "
            "images, correct and fine-tune again. See the README and docs/slicer.md of the TransferSeg "
            "repository."
        )
        self.parent.acknowledgementText = _(
            "Built on MONAI and PyTorch. Sample data: TotalSegmentator examples (Apache-2.0) and slicerio (MIT)."
        )
        slicer.app.connect("startupCompleted()", _register_sample_data)


def _register_sample_data() -> None:
    """Add TransferSeg's sample cases to the Sample Data module (when that part is installed)."""
    try:
        import TransferSegSampleData
    except ImportError:
        return
    try:
        TransferSegSampleData.registerSampleData()
    except Exception:  # a broken sample-data registration must not break the module
        logging.warning("TransferSeg: could not register sample data:\n" + traceback.format_exc())


@parameterPack
class TrainingCase:
    volume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    segments: List[str]


@parameterNodeWrapper
class TransferSegParameterNode:
    """Every choice of the panel, saved with the scene (a running job is re-attached from it)."""

    baseModel: str = "default"
    caseVolume: vtkMRMLScalarVolumeNode
    caseSegmentation: vtkMRMLSegmentationNode
    cases: List[TrainingCase]
    strategy: Annotated[str, Choice(list(STRATEGIES))] = "last-layers"
    timeBudgetMinutes: Annotated[int, WithinRange(1, 1440)] = 10
    device: str = "auto"
    modelName: str = ""
    jobDirectory: str = ""
    lastModel: str = ""
    modelDirectory: str = ""
    targetVolume: vtkMRMLScalarVolumeNode
    tta: bool = False
    largestComponent: bool = False
    correctedSegmentation: vtkMRMLSegmentationNode


class TransferSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._models = []
        self._timer = None

    # --- set-up -------------------------------------------------------------------------------

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self._resource("UI/TransferSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = TransferSegLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.modelsTable.connect("itemSelectionChanged()", self.onModelSelected)
        self.ui.downloadModelButton.connect("clicked(bool)", self.onDownloadModel)
        self.ui.addModelButton.connect("clicked(bool)", self.onAddModel)
        self.ui.caseSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onCaseSegmentationChanged)
        self.ui.addCaseButton.connect("clicked(bool)", self.onAddCase)
        self.ui.removeCaseButton.connect("clicked(bool)", self.onRemoveCase)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.startButton.connect("clicked(bool)", self.onStartStop)
        self.ui.showPlotButton.connect("clicked(bool)", self.onShowPlot)
        self.ui.browseModelButton.connect("clicked(bool)", self.onBrowseModel)
        self.ui.predictButton.connect("clicked(bool)", self.onPredict)
        self.ui.acceptCorrectionButton.connect("clicked(bool)", self.onAcceptCorrection)
        self.ui.finetuneAgainButton.connect("clicked(bool)", self.onFinetuneAgain)

        self.ui.downloadProgressBar.setVisible(False)
        self.ui.predictProgressBar.setVisible(False)
        self._fill_devices()
        self._fill_models()
        self._update_dependencies()
        self.initializeParameterNode()

    def _resource(self, relative: str) -> str:
        """Resources sit next to the module when installed, one folder up in a checkout."""
        installed = self.resourcePath(relative)
        if os.path.exists(installed):
            return installed
        here = os.path.dirname(os.path.abspath(__file__))
        return os.path.join(os.path.dirname(here), "Resources", relative)

    def cleanup(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event) -> None:
        """A loaded scene may hold a job that kept running while Slicer was closed."""
        self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(TransferSegParameterNode(self.logic.getParameterNode()))
        if not self._parameterNode.caseVolume:
            self._parameterNode.caseVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if self._parameterNode.jobDirectory and self.logic.training is None:
            self._reattach(self._parameterNode.jobDirectory)

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
            self._select_device(self._parameterNode.device)
            self._updateGUI()

    # --- keeping the panel in step --------------------------------------------------------------

    def _updateGUI(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        cases = self._scene_cases()
        self.ui.casesTable.setRowCount(len(p.cases))
        for row, case in enumerate(p.cases):
            texts = [case.volume.GetName() if case.volume else _("(deleted)"),
                     case.segmentation.GetName() if case.segmentation else _("(deleted)"),
                     ", ".join(case.segments)]
            for column, text in enumerate(texts):
                self.ui.casesTable.setItem(row, column, qt.QTableWidgetItem(text))
        count = len(cases)
        self.ui.caseCountLabel.text = (_("{count} training case(s)").format(count=count) if count
                                       else _("No training cases yet."))
        labels = training_labels(cases)
        self.ui.targetLabelsLabel.text = ", ".join(labels) if labels else _("(from the ticked segments)")
        training = self.logic.training is not None and self.logic.training.running
        predicting = self.logic.prediction is not None
        self.ui.startButton.text = _("Stop") if training else _("Start fine-tuning")
        self.ui.startButton.enabled = training or count > 0
        self.ui.finetuneAgainButton.enabled = not training and count > 0 and bool(p.lastModel)
        self.ui.addCaseButton.enabled = bool(p.caseVolume and p.caseSegmentation)
        self.ui.predictButton.text = _("Stop") if predicting else _("Predict")
        self.ui.predictButton.enabled = predicting or bool(p.targetVolume and (p.modelDirectory or p.lastModel))
        self.ui.acceptCorrectionButton.enabled = bool(p.correctedSegmentation)
        self.ui.showPlotButton.enabled = self.logic.training is not None and self.logic.training.plot is not None

    def _scene_cases(self) -> List[SceneCase]:
        return [SceneCase(c.volume, c.segmentation, list(c.segments))
                for c in (self._parameterNode.cases if self._parameterNode else []) if c.volume and c.segmentation]

    def _update_dependencies(self) -> None:
        missing = self.logic.missing_dependencies()
        self.ui.dependenciesWidget.setVisible(bool(missing))

    def _fill_devices(self) -> None:
        self.ui.deviceComboBox.clear()
        for device, label in self.logic.available_devices():
            self.ui.deviceComboBox.addItem(label, device)

    def _select_device(self, device: str) -> None:
        for index in range(self.ui.deviceComboBox.count):
            if self.ui.deviceComboBox.itemData(index) == device:
                self.ui.deviceComboBox.setCurrentIndex(index)

    def onDeviceChanged(self, index) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    def _fill_models(self) -> None:
        try:
            self._models = self.logic.base_models()
        except Exception as exc:  # a broken catalog must not break the panel: "default" still works
            logging.warning(f"TransferSeg: model list unavailable: {exc}")
            self._models = []
        table = self.ui.modelsTable
        table.setRowCount(len(self._models))
        for row, entry in enumerate(self._models):
            classes = entry.classes
            texts = [entry.title or entry.name, entry.modality, f"{len(classes)} classes" if classes else "-",
                     entry.license + (_(" (non-commercial)") if entry.non_commercial else ""),
                     _("ready") if entry.cached else _("download needed")]
            for column, text in enumerate(texts):
                table.setItem(row, column, qt.QTableWidgetItem(str(text)))

    def _selected_model(self):
        row = self.ui.modelsTable.currentRow()
        return self._models[row] if 0 <= row < len(self._models) else None

    # --- 1. base model --------------------------------------------------------------------------

    def onModelSelected(self) -> None:
        entry = self._selected_model()
        if entry is None:
            return
        self._parameterNode.baseModel = entry.name
        if entry.source == "scratch":
            self._parameterNode.strategy = "scratch"
        shown = ", ".join(entry.classes[:12]) + (", …" if len(entry.classes) > 12 else "")
        warning = _("<b>Non-commercial license.</b> ") if entry.non_commercial else ""
        self.ui.modelCardLabel.text = f"{warning}<b>{entry.title or entry.name}</b> ({entry.modality or '?'}): " + (
            shown or _("no classes (encoder or scratch)"))
        self.ui.downloadModelButton.enabled = not entry.cached

    def onDownloadModel(self) -> None:
        entry = self._selected_model()
        if entry is None:
            return
        bar = self.ui.downloadProgressBar
        bar.setVisible(True)

        def progress(done, total):
            bar.setMaximum(max(int(total or 0), 1) if total else 0)
            bar.setValue(int(done))
            slicer.app.processEvents()

        with self._errors(_("Download failed.")):
            self.logic.download_base_model(entry.name, progress=progress)
        bar.setVisible(False)
        self._fill_models()

    def onAddModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Pick a TransferSeg model folder or an unzipped MONAI bundle"))
        if folder:
            with self._errors(_("Could not add the model.")):
                self._parameterNode.baseModel = str(self.logic.add_local_model(folder))
                self._fill_models()

    # --- 2. training cases ----------------------------------------------------------------------

    def onCaseSegmentationChanged(self, node) -> None:
        self.ui.segmentsList.clear()
        for name in segment_names(node):
            item = qt.QListWidgetItem(name)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked)
            self.ui.segmentsList.addItem(item)

    def _ticked_segments(self) -> List[str]:
        items = [self.ui.segmentsList.item(i) for i in range(self.ui.segmentsList.count)]
        return [item.text() for item in items if item.checkState() == qt.Qt.Checked]

    def onAddCase(self) -> None:
        p = self._parameterNode
        with self._errors(_("This case cannot be used.")):
            case = self.logic.make_case(p.caseVolume, p.caseSegmentation, self._ticked_segments())
            self._add_case(case)

    def _add_case(self, case: SceneCase) -> None:
        """Add, or replace the entry with the same volume and segmentation."""
        pack = TrainingCase(case.volume, case.segmentation, list(case.segments))
        cases = self._parameterNode.cases
        for index, existing in enumerate(cases):
            if existing.volume is case.volume and existing.segmentation is case.segmentation:
                cases[index] = pack
                return
        cases.append(pack)

    def onRemoveCase(self) -> None:
        row = self.ui.casesTable.currentRow()
        if 0 <= row < len(self._parameterNode.cases):
            del self._parameterNode.cases[row]

    # --- 3. fine-tune ---------------------------------------------------------------------------

    def onInstallDependencies(self) -> None:
        self._ensure_dependencies()

    def _ensure_dependencies(self) -> bool:
        if not self.logic.missing_dependencies():
            return True
        with self._errors(_("TransferSeg's Python packages could not be installed.")):
            self.logic.install_dependencies(self._resource("requirements.txt"))
        self._update_dependencies()
        return not self.logic.missing_dependencies()

    def onStartStop(self) -> None:
        if self.logic.training is not None and self.logic.training.running:
            self.logic.cancel_training()
            self.ui.trainingStatusLabel.text = _("Stopping…")
            return
        self._start(self._parameterNode.baseModel or "default")

    def onFinetuneAgain(self) -> None:
        self._start(self._parameterNode.lastModel)

    def _start(self, base: str) -> None:
        p = self._parameterNode
        if len(self._scene_cases()) < len(p.cases):
            slicer.util.warningDisplay(_("Some training cases refer to deleted nodes and are skipped."))
        if not self._ensure_dependencies():
            return
        with self._errors(_("Fine-tuning could not start.")):
            run = self.logic.start_finetune(
                self._scene_cases(), base=base, strategy=p.strategy, time_budget_s=60.0 * p.timeBudgetMinutes,
                device=p.device, name=p.modelName)
            p.jobDirectory = str(run.directory)
            self.ui.trainingProgressBar.setValue(0)
            self.ui.trainingStatusLabel.text = run.status_line()
            self.onShowPlot()
            self._timer.start()
        self._updateGUI()

    def _reattach(self, directory: str) -> None:
        try:
            run = self.logic.attach_training(directory)
        except TransferSegError as exc:
            self.ui.trainingStatusLabel.text = _("Could not follow the previous job: {error}").format(error=exc)
            self._parameterNode.jobDirectory = ""
            return
        self._show_training(run)
        if run.running:
            self._timer.start()

    def onShowPlot(self) -> None:
        run = self.logic.training
        if run is not None and run.plot is not None:
            slicer.modules.plots.logic().ShowChartInLayout(run.plot.chart)

    def onTimer(self) -> None:
        busy = False
        run = self.logic.training
        if run is not None and run.running:
            try:
                self.logic.poll_training()
            except Exception as exc:  # stop following rather than failing every second
                logging.error(traceback.format_exc())
                run.state, run.error = "failed", _("Lost track of the fine-tuning job ({error}). Its folder: {folder}").format(
                    error=exc, folder=run.directory)
            self._show_training(run)
            busy = run.running
        if self.logic.prediction is not None:
            busy = self._poll_prediction() or busy
        if not busy:
            self._timer.stop()
        self._updateGUI()

    def _show_training(self, run) -> None:
        self.ui.trainingProgressBar.setValue(run.percent())
        self.ui.trainingStatusLabel.text = run.status_line()
        if run.running:
            return
        p = self._parameterNode  # None while the scene closes: the job's end is still shown
        if p is not None:
            p.jobDirectory = ""
        if run.state == "finished":
            if p is not None:
                p.lastModel = run.model
                p.modelDirectory = run.model
            if run.warnings:
                self.ui.trainingStatusLabel.text += "\n" + "\n".join(run.warnings[-2:])
        elif run.state == "failed":
            slicer.util.errorDisplay(run.error or _("Fine-tuning failed."), windowTitle="TransferSeg")

    # --- 4. predict -----------------------------------------------------------------------------

    def onBrowseModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Pick a fine-tuned model folder"))
        if folder:
            with self._errors(_("This folder is not a TransferSeg model.")):
                read_model_card(folder)
                self._parameterNode.modelDirectory = folder

    def onPredict(self) -> None:
        if self.logic.prediction is not None:
            self.logic.cancel_prediction()
            self.ui.predictStatusLabel.text = _("Prediction stopped.")
            self.ui.predictProgressBar.setVisible(False)
            self._updateGUI()
            return
        p = self._parameterNode
        if not self._ensure_dependencies():
            return
        with self._errors(_("Prediction could not start.")):
            self.logic.start_prediction(p.targetVolume, p.modelDirectory or p.lastModel, device=p.device,
                                        tta=p.tta, largest_component=p.largestComponent)
            self.ui.predictProgressBar.setRange(0, 0)
            self.ui.predictProgressBar.setVisible(True)
            self.ui.predictStatusLabel.text = _("Predicting {name}…").format(name=p.targetVolume.GetName())
            self._timer.start()
        self._updateGUI()

    def _poll_prediction(self) -> bool:
        """True while still predicting."""
        node = None
        try:
            node = self.logic.poll_prediction()
        except Exception as exc:  # shown once; the prediction is over either way
            self._finish_prediction()
            message = str(exc) if isinstance(exc, TransferSegError) else _("Unexpected error: {error}").format(error=exc)
            self.ui.predictStatusLabel.text = message
            slicer.util.errorDisplay(_("Prediction failed.") + "\n\n" + message, windowTitle="TransferSeg")
            return False
        if node is None and self.logic.prediction is not None:
            return True
        self._finish_prediction()
        if node is not None:
            self.ui.predictStatusLabel.text = _(
                "Created '{name}'. Correct it in the Segment Editor, then add it as a training case.").format(
                name=node.GetName())
            if self._parameterNode is not None:
                self._parameterNode.correctedSegmentation = node
        return False

    def _finish_prediction(self) -> None:
        self.ui.predictProgressBar.setRange(0, 100)
        self.ui.predictProgressBar.setVisible(False)

    # --- 5. review and iterate ------------------------------------------------------------------

    def onAcceptCorrection(self) -> None:
        with self._errors(_("The corrected segmentation cannot be used as a training case.")):
            case = self.logic.case_from_correction(self._parameterNode.correctedSegmentation)
            self._add_case(case)
            self.ui.trainingStatusLabel.text = _("Added '{name}' ({segments}). Fine-tune again to learn from it.").format(
                name=case.segmentation.GetName(), segments=", ".join(case.segments))

    # --- errors ---------------------------------------------------------------------------------

    def _errors(self, what: str):
        return _ErrorDisplay(what)


class _ErrorDisplay:
    """Show a failure as a message saying what to do; expected errors without a traceback."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if error is None:
            return False
        if isinstance(error, TransferSegError):
            slicer.util.errorDisplay(f"{self.what}\n\n{error}", windowTitle="TransferSeg")
        elif isinstance(error, Exception):
            details = "".join(traceback.format_exception(kind, error, tb))
            logging.error(details)
            slicer.util.errorDisplay(f"{self.what}\n\nUnexpected error: {error}", windowTitle="TransferSeg",
                                     detailedText=details)
        else:
            return False
        return True


class TransferSegTest(ScriptedLoadableModuleTest):
    """The whole loop on the shipped sample data: fine-tune → predict → correct → fine-tune again.

    Run it from the module panel (developer mode: "Reload and Test") or from the Python
    console with ``slicer.selfTests["TransferSeg"]()``. It trains for a few iterations
    on small patches, so it checks that the pieces fit (about a minute on a CPU once
    PyTorch and MONAI are installed), not the quality of the model. The same test runs
    headless in the project's test suite (Testing/test_module_logic.py).
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_TransferSeg_fine_tune_predict_loop()

    def test_TransferSeg_fine_tune_predict_loop(self):
        logic = TransferSegLogic()
        if logic.missing_dependencies():
            self.delayDisplay("Installing TransferSeg's Python packages (asks first)")
            logic.install_dependencies(logic.requirements_path())
        keep_responsive = lambda events: slicer.app.processEvents()  # noqa: E731

        self.delayDisplay("Loading the sample CT with its liver")
        volume, segmentation = logic.load_sample_case(["liver"])
        self.assertEqual(segment_names(segmentation), ["liver"])
        case = logic.make_case(volume, segmentation, ["liver"])

        self.delayDisplay("Fine-tuning for a few iterations")
        settings = logic.smoke_test_settings()
        run = logic.start_finetune([case], **settings)
        self.assertTrue(run.running and os.path.isdir(str(run.directory)))
        run = logic.wait_for_training(timeout=900, on_events=keep_responsive)
        self.assertEqual(run.state, "finished", run.error)
        self.assertEqual(run.labels, ["liver"])
        self.assertGreater(run.plot.points()["loss"], 0)  # the live plot got its loss curve
        self.assertEqual(run.percent(), 100)

        self.delayDisplay("Predicting the volume with the fine-tuned model")
        prediction = logic.predict(volume, run.model, timeout=900)
        self.assertTrue(prediction.IsA("vtkMRMLSegmentationNode"))
        self.assertIsNot(prediction, segmentation)
        self.assertIn(volume.GetName(), prediction.GetName())
        self.assertEqual(segment_names(prediction), ["liver"])
        self.assertEqual(segment_names(segmentation), ["liver"])  # the user's segmentation is untouched

        self.delayDisplay("Correcting the prediction, adding it as a case, fine-tuning again from the new model")
        # A few iterations may not find the whole liver: paint the reference in, as a user would.
        liver = segmentation.GetSegmentation().GetSegmentIdBySegmentName("liver")
        reference = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, liver, volume)
        predicted_liver = prediction.GetSegmentation().GetSegmentIdBySegmentName("liver")
        slicer.util.updateSegmentBinaryLabelmapFromArray(reference, prediction, predicted_liver, volume)
        corrected = logic.case_from_correction(prediction)
        self.assertIs(corrected.volume, volume)
        self.assertEqual(corrected.segments, ["liver"])
        settings.update(base=run.model, iterations=4)
        logic.start_finetune([case, corrected], **settings)
        again = logic.wait_for_training(timeout=900, on_events=keep_responsive)
        self.assertEqual(again.state, "finished", again.error)
        self.assertNotEqual(again.model, run.model)
        self.assertGreaterEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), 2)
        self.delayDisplay("Test passed")
