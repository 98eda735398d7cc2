"""Section 4 (predict) and the comparison of section 5: background work with progress and a quick Cancel."""

import qt
import slicer

from TransferSegLib.errors import TransferSegError
from TransferSegLib.scene.runs import read_model_card
from TransferSegPanel import texts
from TransferSegPanel.common import ErrorDisplay, WaitCursor, fill_table


class PredictSection:
    def onBrowseModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Pick a fine-tuned model folder")
        if folder:
            with ErrorDisplay("This folder is not a TransferSeg model."):
                read_model_card(folder)
                self._parameterNode.modelDirectory = folder

    def onPredict(self) -> None:
        if self.logic.prediction is not None:
            self.logic.cancel_prediction()  # kills the process tree; does not wait for it
            self.ui.predictStatusLabel.text = "Prediction stopped."
            self.ui.predictProgressBar.setVisible(False)
            self._updateGUI()
            return
        p = self._parameterNode
        if not self._ensure_dependencies():
            return
        with ErrorDisplay("Prediction could not start.", wait=True):
            self.logic.start_prediction(p.targetVolume, p.modelDirectory or p.lastModel, device=p.device,
                                        tta=p.tta, largest_component=True if p.largestComponent else None,
                                        channels=self._predict_channels.nodes())
            self.ui.predictProgressBar.setRange(0, 0)  # busy until the sliding window reports its first fraction
            self.ui.predictProgressBar.setVisible(True)
            self.ui.predictStatusLabel.text = self.logic.prediction_status()
            self._timer.start()
        self._updateGUI()

    def _poll_prediction(self) -> bool:
        """True while still predicting."""
        if self.logic.prediction is None:
            return False
        try:
            with WaitCursor() if self.logic.prediction.process.poll() is not None else _Nothing():
                node = self.logic.poll_prediction()
        except Exception as exc:  # shown once; the prediction is over either way
            self._finish_prediction()
            message = str(exc) if isinstance(exc, TransferSegError) else f"Unexpected error: {exc}"
            self.ui.predictStatusLabel.text = message
            slicer.util.errorDisplay("Prediction failed.\n\n" + message, windowTitle="TransferSeg")
            return False
        if node is None:
            self.ui.predictStatusLabel.text = self.logic.prediction_status()
            percent = self.logic.prediction_percent()
            if percent is not None:  # the sliding window has started: a real fraction instead of busy
                self.ui.predictProgressBar.setRange(0, 100)
                self.ui.predictProgressBar.setValue(percent)
            return self.logic.prediction is not None
        self._finish_prediction()
        self.ui.predictStatusLabel.text = (f"Created '{node.GetName()}'. Correct it (Edit in Segment Editor), tick the "
                                           f"classes you reviewed, then add it as a training case.")
        if self._parameterNode is not None:
            self._parameterNode.correctedSegmentation = node  # the prediction, never a hand-drawn segmentation
        self.ui.reviewCollapsibleButton.collapsed = False
        return False

    def _finish_prediction(self) -> None:
        self.ui.predictProgressBar.setRange(0, 100)
        self.ui.predictProgressBar.setVisible(False)

    # --- compare with a reference ------------------------------------------------------------------

    def onCompare(self) -> None:
        p = self._parameterNode
        with ErrorDisplay("The segmentations cannot be compared.", wait=True):
            self._comparison = self.logic.start_comparison(p.correctedSegmentation, p.referenceSegmentation)
            fill_table(self.ui.metricsTable, [["computing…", "", ""]])
            self._timer.start()

    def _poll_comparison(self) -> bool:
        task = getattr(self, "_comparison", None)
        if task is None:
            return False
        done = task.poll()
        if done is None:
            return True
        self._comparison = None
        if done:
            fill_table(self.ui.metricsTable, texts.metric_rows(task.result), fit=(1, 2))
        else:
            fill_table(self.ui.metricsTable, [])
            slicer.util.errorDisplay(f"The comparison failed.\n\n{task.error}", windowTitle="TransferSeg")
        return False


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False
