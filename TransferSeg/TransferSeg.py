"""TransferSeg: fine-tune a pretrained 3D segmentation model on a few cases, in Slicer.

The panel follows the workflow: (1) base model, (2) training cases, (3) fine-tune,
(4) predict, (5) review and iterate, (6) the jobs of this computer. This file binds
the GUI to the parameter node; each section's slots live in ``TransferSegPanel/``
and everything else in the Logic (``TransferSegLib.scene.logic``), which runs long
work in background processes and can be used from the Python console without the
panel. Slicer's process never imports torch or MONAI: the engine runs in workers.
Supported: Slicer 5.6 and later.
"""

import logging
import os
import sys
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
    if here not in sys.path:  # TransferSegPanel/ sits next to this file
        sys.path.insert(0, here)
    for folder in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(folder, "TransferSegLib")) and folder not in sys.path:
            sys.path.insert(0, folder)
            return


_make_library_importable()

from TransferSegLib.scene import segment_names, training_labels  # noqa: E402
from TransferSegLib.scene.logic import TransferSegLogic  # noqa: E402
from TransferSegLib.specs import DEFAULT_STRATEGY, STRATEGY_CHOICES, TrainConfig  # noqa: E402
from TransferSegPanel import texts  # noqa: E402
from TransferSegPanel.cases import CasesSection  # noqa: E402
from TransferSegPanel.channels import ChannelsSection  # noqa: E402
from TransferSegPanel.closing import CloseGuard  # noqa: E402
from TransferSegPanel.models import ModelsSection  # noqa: E402
from TransferSegPanel.predict import PredictSection  # noqa: E402
from TransferSegPanel.training import TrainingSection  # noqa: E402

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
        logging.exception("TransferSeg: could not register sample data")


@parameterPack
class TrainingCase:
    volume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    segments: List[str]
    sparse: bool = False
    validation: bool = False
    slices: int = 0
    channels: List[vtkMRMLScalarVolumeNode]  # channels 2, 3... of a multi-channel model (volume is channel 1)
    channelNames: List[str]


@parameterNodeWrapper
class TransferSegParameterNode:
    """Every choice of the panel, saved with the scene (a running job is re-attached from it)."""

    baseModel: str = "default"
    caseVolume: vtkMRMLScalarVolumeNode
    caseSegmentation: vtkMRMLSegmentationNode
    sparse: bool = False
    cases: List[TrainingCase]
    strategy: Annotated[str, Choice(list(STRATEGY_CHOICES))] = DEFAULT_STRATEGY
    timeBudgetMinutes: Annotated[int, WithinRange(1, 1440)] = int(TrainConfig.time_budget // 60)
    device: str = "auto"
    modelName: str = ""
    jobDirectory: str = ""
    lastModel: str = ""
    modelDirectory: str = ""
    targetVolume: vtkMRMLScalarVolumeNode
    tta: bool = False
    largestComponent: bool = False
    correctedSegmentation: vtkMRMLSegmentationNode
    referenceSegmentation: vtkMRMLSegmentationNode


class TransferSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, ModelsSection, CasesSection,
                        TrainingSection, PredictSection, ChannelsSection):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._models, self._jobs = [], []
        self._timer = None
        self._busy = None
        self._filling = False
        self._close_guard = None
        self._devices_shown = False

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

        ui = self.ui
        for widget, signal, slot in (
            (ui.installDependenciesButton, "clicked(bool)", self.onInstallDependencies),
            (ui.modelsTable, "itemSelectionChanged()", self.onModelSelected),
            (ui.downloadModelButton, "clicked(bool)", self.onDownloadModel),
            (ui.cancelDownloadButton, "clicked(bool)", self.onCancelDownload),
            (ui.addModelButton, "clicked(bool)", self.onAddModel),
            (ui.deleteModelButton, "clicked(bool)", self.onDeleteModel),
            (ui.caseSegmentationSelector, "currentNodeChanged(vtkMRMLNode*)", self.onCaseSegmentationChanged),
            (ui.segmentsList, "itemChanged(QListWidgetItem*)", self.onSegmentTicked),
            (ui.selectAllSegmentsButton, "clicked(bool)", self.onSelectAllSegments),
            (ui.selectNoSegmentsButton, "clicked(bool)", self.onSelectNoSegments),
            (ui.addCaseButton, "clicked(bool)", self.onAddCase),
            (ui.removeCaseButton, "clicked(bool)", self.onRemoveCase),
            (ui.validationCaseButton, "clicked(bool)", self.onToggleValidation),
            (ui.deviceComboBox, "currentIndexChanged(int)", self.onDeviceChanged),
            (ui.startButton, "clicked(bool)", self.onStartStop),
            (ui.showPlotButton, "clicked(bool)", self.onShowPlot),
            (ui.showBusyJobButton, "clicked(bool)", self.onShowBusyJob),
            (ui.cancelBusyJobButton, "clicked(bool)", self.onCancelBusyJob),
            (ui.browseModelButton, "clicked(bool)", self.onBrowseModel),
            (ui.predictButton, "clicked(bool)", self.onPredict),
            (ui.correctedSegmentationSelector, "currentNodeChanged(vtkMRMLNode*)", self.onCorrectedSegmentationChanged),
            (ui.reviewedSegmentsList, "itemChanged(QListWidgetItem*)", self.onReviewTicked),
            (ui.editSegmentationButton, "clicked(bool)", self.onEditSegmentation),
            (ui.acceptCorrectionButton, "clicked(bool)", self.onAcceptCorrection),
            (ui.finetuneAgainButton, "clicked(bool)", self.onFinetuneAgain),
            (ui.compareButton, "clicked(bool)", self.onCompare),
            (ui.attachJobButton, "clicked(bool)", self.onAttachJob),
            (ui.cancelJobButton, "clicked(bool)", self.onCancelJob),
            (ui.resumeJobButton, "clicked(bool)", self.onResumeJob),
            (ui.deleteJobButton, "clicked(bool)", self.onDeleteJob),
            (ui.refreshJobsButton, "clicked(bool)", self._fill_jobs),
        ):
            widget.connect(signal, slot)

        for bar in (ui.downloadProgressBar, ui.predictProgressBar, ui.trainingProgressBar):
            bar.setVisible(False)  # no "0 %" before anything runs
        ui.cancelDownloadButton.setVisible(False)
        self._set_up_channels()
        self.logic.start_device_query()  # nvidia-smi in a thread: never on the main thread
        self._fill_devices()
        self._fill_models()
        self._fill_jobs()
        self._update_dependencies()
        main_window = slicer.util.mainWindow()
        if main_window is not None:
            self._close_guard = CloseGuard(self.logic)
            main_window.installEventFilter(self._close_guard)
        self.initializeParameterNode()
        self._fold_by_state()
        self._timer.start()  # until the GPU list has arrived

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
        main_window = slicer.util.mainWindow()
        if self._close_guard is not None and main_window is not None:
            main_window.removeEventFilter(self._close_guard)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._fill_jobs()

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
        last = self._last_job()
        if last and self.logic.training is None:
            self._reattach(last)

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
        ui = self.ui
        cases = self._scene_cases()
        self._show_cases()
        self._show_channels()
        hint = texts.first_step(bool(p.caseVolume), bool(cases))
        ui.welcomeLabel.setVisible(hint is not None)
        ui.welcomeLabel.text = hint or ""
        labels = training_labels(cases)
        ui.targetLabelsLabel.text = ", ".join(labels) if labels else "(from the ticked segments)"
        self._show_validation_note()
        training = self.logic.training is not None and self.logic.training.running
        predicting = self.logic.prediction is not None
        ui.startButton.text = "Stop" if training else "Start fine-tuning"
        ui.startButton.enabled = training or len(cases) > 0
        ui.finetuneAgainButton.enabled = not training and len(cases) > 0 and bool(p.lastModel)
        ui.addCaseButton.enabled = bool(p.caseVolume and p.caseSegmentation)
        ui.selectAllSegmentsButton.enabled = ui.selectNoSegmentsButton.enabled = bool(p.caseSegmentation)
        ui.busyDeviceWidget.setVisible(self._busy is not None and bool(training and self.logic.training.queued))
        ui.predictButton.text = "Stop" if predicting else "Predict"
        ui.predictButton.enabled = predicting or bool(p.targetVolume and (p.modelDirectory or p.lastModel))
        corrected = p.correctedSegmentation
        ui.acceptCorrectionButton.enabled = bool(corrected)
        ui.editSegmentationButton.enabled = bool(corrected or p.caseSegmentation)
        ui.compareButton.enabled = bool(corrected and p.referenceSegmentation)
        ui.showPlotButton.enabled = self.logic.training is not None and self.logic.training.plot is not None
        ui.trainingProgressBar.setVisible(self.logic.training is not None)

    def _fill_devices(self) -> None:
        probe = self.logic.devices
        self.ui.deviceComboBox.clear()
        for device, label in (probe.devices() if probe else self.logic.available_devices()):
            self.ui.deviceComboBox.addItem(label, device)
        self._devices_shown = probe is None or probe.ready
        if self._parameterNode:
            self._select_device(self._parameterNode.device)

    def _select_device(self, device: str) -> None:
        for index in range(self.ui.deviceComboBox.count):
            if self.ui.deviceComboBox.itemData(index) == device:
                self.ui.deviceComboBox.setCurrentIndex(index)

    def onDeviceChanged(self, index) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    def onTimer(self) -> None:
        busy = False
        if not self._devices_shown:
            if self.logic.devices.ready:
                self._fill_devices()
            busy = not self._devices_shown
        busy = self._poll_training() or busy
        busy = self._poll_prediction() or busy
        busy = self._poll_task() or busy
        busy = self._poll_comparison() or busy
        if not busy:
            self._timer.stop()
        self._updateGUI()


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
        corrected = logic.case_from_correction(prediction, reviewed=["liver"])  # only reviewed classes count
        self.assertIs(corrected.volume, volume)
        self.assertEqual(corrected.segments, ["liver"])
        settings.update(base=run.model, iterations=4)
        logic.start_finetune([case, corrected], **settings)
        again = logic.wait_for_training(timeout=900, on_events=keep_responsive)
        self.assertEqual(again.state, "finished", again.error)
        self.assertNotEqual(again.model, run.model)
        self.assertGreaterEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), 2)
        self.delayDisplay("Test passed")
