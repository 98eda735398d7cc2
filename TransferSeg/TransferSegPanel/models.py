"""Section 1 (base model) and the dependency bar: list, card, background download, add, delete."""

import logging

import qt
import slicer

from TransferSegPanel import texts
from TransferSegPanel.common import ErrorDisplay, fill_table


class ModelsSection:
    def _fill_models(self) -> None:
        """The model table, read from JSON files only (no torch); called again after installs and downloads."""
        try:
            self._models = self.logic.base_models()
            self._channel_cache.clear()  # a model may have been added, replaced or installed
        except Exception as exc:  # a broken catalog must not break the panel: "default" still works
            logging.warning(f"TransferSeg: model list unavailable: {exc}")
            self._models = []
        fill_table(self.ui.modelsTable, [texts.model_row(m) for m in self._models],
                   [", ".join(m.classes) for m in self._models], fit=(1, 2, 3, 4))
        current = self._parameterNode.baseModel if self._parameterNode else "default"
        for row, entry in enumerate(self._models):
            if entry.name == current:
                self.ui.modelsTable.selectRow(row)

    def _selected_model(self):
        row = self.ui.modelsTable.currentRow()
        return self._models[row] if 0 <= row < len(self._models) else None

    def onModelSelected(self) -> None:
        entry = self._selected_model()
        if entry is None or self._parameterNode is None:
            return
        self._parameterNode.baseModel = entry.name
        if entry.source == "scratch":
            self._parameterNode.strategy = "scratch"
        self.ui.modelCardLabel.text = texts.model_card(entry)
        self._show_channels()  # one volume selector per input channel of this base model
        self.ui.downloadModelButton.enabled = not entry.cached and self.logic.task is None
        self.ui.deleteModelButton.enabled = entry.source == "fine-tuned"

    def onDownloadModel(self) -> None:
        entry = self._selected_model()
        if entry is None:
            return
        with ErrorDisplay("The download could not start."):
            self.logic.start_download(entry.name)
            self._show_task()
            self._timer.start()

    def onAddModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), "Pick a TransferSeg model folder or an unzipped MONAI bundle")
        if not folder:
            return
        with ErrorDisplay("Could not add the model."):
            added = self.logic.add_local_model(folder)
            if isinstance(added, str):
                self._parameterNode.baseModel = added
                self._fill_models()
            else:  # a bundle or checkpoint: checked by a worker process
                self._show_task()
                self._timer.start()

    def onDeleteModel(self) -> None:
        entry = self._selected_model()
        if entry is None or not slicer.util.confirmYesNoDisplay(
                f"Delete the model folder '{entry.name}'? This cannot be undone.", windowTitle="TransferSeg"):
            return
        with ErrorDisplay("The model could not be deleted."):
            self.logic.delete_model(entry)
            self._fill_models()

    def onCancelDownload(self) -> None:
        if self.logic.task is not None:
            self.logic.task.cancel()
            self.logic.task = None
        self._show_task()

    def _show_task(self) -> None:
        task = self.logic.task
        bar = self.ui.downloadProgressBar
        running = task is not None and not task.done
        bar.setVisible(running)
        self.ui.cancelDownloadButton.setVisible(running)
        if running:
            percent = task.percent()
            bar.setRange(0, 100 if percent is not None else 0)  # percent, never bytes: no int overflow
            bar.setValue(percent or 0)
            bar.setFormat(f"{task.kind}: %p% {task.progress_text()}" if percent is not None else task.kind)

    def _poll_task(self) -> bool:
        """True while a download or model registration runs."""
        task = self.logic.task
        if task is None:
            return False
        finished = task.poll()
        self._show_task()
        if finished is None:
            return True
        self.logic.task = None
        self._show_task()
        if finished:
            if task.kind == "model registration" and self._parameterNode is not None:
                self._parameterNode.baseModel = str(task.result)
            self._fill_models()
        else:
            slicer.util.errorDisplay(f"The {task.kind} failed.\n\n{task.error}", windowTitle="TransferSeg")
        return False

    # --- dependencies ------------------------------------------------------------------------------

    def _update_dependencies(self) -> None:
        self.ui.dependenciesWidget.setVisible(bool(self.logic.missing_dependencies()))

    def onInstallDependencies(self) -> None:
        self._ensure_dependencies()

    def _ensure_dependencies(self) -> bool:
        if not self.logic.missing_dependencies():
            return True
        with ErrorDisplay("TransferSeg's Python packages could not be installed."):
            self.logic.install_dependencies(self._resource("requirements.txt"))
        self._update_dependencies()
        self._fill_models()  # catalog models need the engine's packages: list them now
        return not self.logic.missing_dependencies()
