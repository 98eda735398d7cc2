"""Asking before Slicer closes while a fine-tuning job runs: keep it running, stop it, or stay open."""

import qt

KEEP, STOP = "keep", "stop"


def close_choice(job_name: str):
    """The user's answer: KEEP (the job goes on in the background), STOP, or None (do not close)."""
    box = qt.QMessageBox(qt.QMessageBox.Question, "TransferSeg",
                         f"The fine-tuning job '{job_name}' is still running.\n\nIt can keep running in the background: "
                         f"open TransferSeg again later and find it under 'Jobs on this computer'.")
    keep = box.addButton("Keep it running", qt.QMessageBox.AcceptRole)
    stop = box.addButton("Stop the job", qt.QMessageBox.DestructiveRole)
    box.addButton("Don't close Slicer", qt.QMessageBox.RejectRole)
    box.setDefaultButton(keep)
    box.exec_()
    clicked = box.clickedButton()
    return KEEP if clicked == keep else STOP if clicked == stop else None


class CloseGuard(qt.QObject):
    """An event filter on Slicer's main window: its Close event asks first while a job runs."""

    def __init__(self, logic):
        qt.QObject.__init__(self)
        self.logic = logic

    def eventFilter(self, watched, event) -> bool:
        run = self.logic.training
        if event.type() != qt.QEvent.Close or run is None or not run.running:
            return False
        choice = close_choice(run.directory.name)
        if choice is None:
            event.ignore()
            return True
        if choice == STOP:
            self.logic.cancel_training()
        return False
