"""Section 3 (fine-tune) and section 6 (jobs): start/stop, follow, a busy device explained, every job listed.

A job started while another holds its device waits, queued: the status line says
whom it waits for, the busy-device box offers to show or cancel that job, and Stop
cancels the waiting one.

The last job is remembered in the scene (parameter node) and in Slicer's settings
(``qt.QSettings``), so a job started before Slicer restarted is found again even when
the scene was not saved; the Jobs section lists every job of this computer anyway.
"""

import logging
import traceback
from pathlib import Path

import qt
import slicer

from TransferSegLib.errors import TransferSegError
from TransferSegLib.scene.training_logic import validation_note
from TransferSegPanel import texts
from TransferSegPanel.common import ErrorDisplay, WaitCursor, fill_table

LAST_JOB = "TransferSeg/lastJob"


class TrainingSection:
    def onStartStop(self) -> None:
        if self.logic.training is not None and self.logic.training.running:
            self.logic.cancel_training()
            self.ui.trainingStatusLabel.text = "Stopping…"
            return
        self._start(self._parameterNode.baseModel or "default")

    def onFinetuneAgain(self) -> None:
        self._start(self._parameterNode.lastModel)

    def _start(self, base: str) -> None:
        p = self._parameterNode
        if len(self._scene_cases()) < len(p.cases):
            slicer.util.warningDisplay("Some training cases refer to deleted nodes and are skipped.")
        if not self._ensure_dependencies():
            return
        self._busy = None
        try:
            with WaitCursor():
                run = self.logic.start_finetune(
                    self._scene_cases(), base=base, strategy=p.strategy, time_budget_s=60.0 * p.timeBudgetMinutes,
                    device=p.device, name=p.modelName)
        except Exception:
            with ErrorDisplay("Fine-tuning could not start."):
                raise
            return
        if run.queued:  # the device is busy: explained in the panel, with buttons, not a shell command
            self._busy = self.logic.jobs.busy(p.device)
            self.ui.busyDeviceLabel.text = run.waiting
        self._remember_job(str(run.directory))
        self.ui.trainingProgressBar.setValue(0)
        self.ui.trainingStatusLabel.text = texts.training_status(run)
        self.ui.baseModelCollapsibleButton.collapsed = True  # what is done folds away
        self.ui.casesCollapsibleButton.collapsed = True
        self.onShowPlot()
        self._timer.start()
        self._fill_jobs()
        self._updateGUI()

    def _fold_by_state(self) -> None:
        """The first view shows what comes first: Predict opens once there is a model, Review once there
        is a prediction (each section's title still opens it)."""
        p = self._parameterNode
        self.ui.predictCollapsibleButton.collapsed = not (p is not None and (p.modelDirectory or p.lastModel))
        self.ui.reviewCollapsibleButton.collapsed = not (p is not None and p.correctedSegmentation)

    def _remember_job(self, directory: str) -> None:
        self._parameterNode.jobDirectory = directory
        qt.QSettings().setValue(LAST_JOB, directory)

    def _last_job(self) -> str:
        if self._parameterNode and self._parameterNode.jobDirectory:
            return self._parameterNode.jobDirectory
        value = qt.QSettings().value(LAST_JOB)  # found even when the scene was not saved: only while it runs
        if not value or not Path(str(value)).is_dir():
            return ""
        row = self.logic.jobs.row(str(value))
        return str(value) if row is not None and row.running else ""

    def _reattach(self, directory: str) -> None:
        try:
            run = self.logic.attach_training(directory)
        except TransferSegError as exc:
            self.ui.trainingStatusLabel.text = f"Could not follow the previous job: {exc}"
            self._parameterNode.jobDirectory = ""
            return
        self._show_training(run)
        if run.running:
            self._timer.start()

    def onShowPlot(self) -> None:
        run = self.logic.training
        if run is not None and run.plot is not None:
            slicer.modules.plots.logic().ShowChartInLayout(run.plot.chart)

    def _poll_training(self) -> bool:
        run = self.logic.training
        if run is None or not run.running:
            return False
        try:
            self.logic.poll_training()
        except Exception as exc:  # stop following rather than failing every second
            logging.error(traceback.format_exc())
            run.state, run.error = "failed", f"Lost track of the fine-tuning job ({exc}). Its folder: {run.directory}"
        self._show_training(run)
        return run.running

    def _show_training(self, run) -> None:
        self.ui.trainingProgressBar.setVisible(True)
        self.ui.trainingProgressBar.setValue(run.percent())
        self.ui.trainingStatusLabel.text = texts.training_status(run)
        if self._busy is not None and not run.queued:
            self._busy = None  # the device came free (or the job ended): nothing to explain any more
        if run.running:
            return
        p = self._parameterNode  # None while the scene closes: the job's end is still shown
        if p is not None:
            p.jobDirectory = ""
        self._fill_jobs()
        if run.state == "finished":
            if p is not None:
                p.lastModel = run.model
                p.modelDirectory = run.model
            self.ui.predictCollapsibleButton.collapsed = False
            self._fill_models()
            if run.warnings:
                self.ui.trainingStatusLabel.text += "\n" + "\n".join(run.warnings[-2:])
        elif run.state == "failed":
            slicer.util.errorDisplay(run.error or "Fine-tuning failed.", windowTitle="TransferSeg")

    # --- the busy device ---------------------------------------------------------------------------

    def onShowBusyJob(self) -> None:
        if self._busy is not None:
            self._follow(self._busy.job)
            self._busy = None
            self._updateGUI()

    def onCancelBusyJob(self) -> None:
        if self._busy is not None:
            with ErrorDisplay("The job could not be stopped."):
                self.logic.cancel_job(self._busy.job)
            self._busy = None
            self._fill_jobs()
            self._updateGUI()

    # --- section 6: jobs ---------------------------------------------------------------------------

    def _fill_jobs(self) -> None:
        try:
            self._jobs = self.logic.jobs.rows()
        except TransferSegError as exc:
            logging.warning(f"TransferSeg: cannot list jobs: {exc}")
            self._jobs = []
        fill_table(self.ui.jobsTable, [texts.job_row(r) for r in self._jobs], [r.directory for r in self._jobs], fit=(1, 2))

    def _selected_job(self):
        row = self.ui.jobsTable.currentRow()
        return self._jobs[row] if 0 <= row < len(self._jobs) else None

    def _follow(self, directory: str) -> None:
        if self.logic.training is not None and self.logic.training.running:
            if str(self.logic.training.directory) == str(directory):
                return
            self.logic.training = None  # the other job keeps running; it stays in the Jobs list
        self._remember_job(str(directory))
        self._reattach(str(directory))
        self.onShowPlot()

    def onAttachJob(self) -> None:
        row = self._selected_job()
        if row is not None:
            self._follow(row.directory)
            self._updateGUI()

    def onCancelJob(self) -> None:
        row = self._selected_job()
        if row is not None:
            with ErrorDisplay("The job could not be stopped."):
                self.logic.cancel_job(row.directory)
            self._fill_jobs()

    def onResumeJob(self) -> None:
        row = self._selected_job()
        if row is None:
            return
        with ErrorDisplay("The job could not be resumed."):
            run = self.logic.resume_training(row.directory)
            self._remember_job(row.directory)
            self._show_training(run)
            self._timer.start()
        self._fill_jobs()
        self._updateGUI()

    def onDeleteJob(self) -> None:
        row = self._selected_job()
        if row is None or not slicer.util.confirmYesNoDisplay(
                f"Delete the job folder '{row.directory}'? Its model folder (if any) is kept.", windowTitle="TransferSeg"):
            return
        with ErrorDisplay("The job could not be deleted."):
            self.logic.delete_job(row.directory)
        self._fill_jobs()

    def _show_validation_note(self) -> None:
        self.ui.validationNoteLabel.text = validation_note(self._scene_cases())
