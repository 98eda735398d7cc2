#!/usr/bin/env python3
"""Render the panel's real .ui in a realistic state to a PNG (docs/screenshots/panel.png).

Slicer cannot run here, so the .ui file is loaded with PySide6's QUiLoader and
Slicer's own widget classes are mapped to plain Qt stand-ins (``ctkCollapsibleButton``
→ a titled group that folds, ``qMRMLNodeComboBox`` → a combo box showing the node's
name). The content is what the panel would show, produced by the real Logic on real
MRML (slicer-core) and the panel's own text functions (``TransferSeg/TransferSegPanel/texts.py``):
the sample CT with two training cases (one drawn on every 4th slice, held out for
validation), a fine-tuning job part-way with its per-class Dice, a finished
prediction, a comparison with the reference, and the Jobs table.

Usage: QT_QPA_PLATFORM=offscreen python Utilities/panel_screenshot.py [--output docs/screenshots/panel.png]
Prints one JSON line: the output path, its size and the texts shown.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "TransferSeg"), str(ROOT / "Testing")]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Property, QFile  # noqa: E402
from PySide6.QtGui import QFont  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication, QComboBox, QGroupBox, QHeaderView, QLabel, QListWidget, QListWidgetItem, QProgressBar,
    QPushButton, QTableWidget, QTableWidgetItem, QWidget,
)
from PySide6.QtCore import Qt  # noqa: E402


class ctkCollapsibleButton(QGroupBox):  # noqa: N801  (the class name the .ui names)
    """A titled section that folds like CTK's (an arrow before the title, contents hidden)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._text, self._collapsed = "", False
        self.setStyleSheet("QGroupBox { font-weight: bold; border: 1px solid #b8b8b8; border-radius: 3px; "
                           "margin-top: 12px; padding-top: 6px; } QGroupBox::title { subcontrol-origin: margin; "
                           "left: 6px; padding: 0 3px; }")

    def _title(self):
        self.setTitle(("▸ " if self._collapsed else "▾ ") + self._text)

    def getText(self):
        return self._text

    def setText(self, text):
        self._text = text
        self._title()

    def getCollapsed(self):
        return self._collapsed

    def setCollapsed(self, collapsed):
        self._collapsed = bool(collapsed)
        for child in self.findChildren(QWidget, options=Qt.FindDirectChildrenOnly):
            child.setVisible(not self._collapsed)
        self.setMaximumHeight(26 if self._collapsed else 16777215)
        self._title()

    text = Property(str, getText, setText)
    collapsed = Property(bool, getCollapsed, setCollapsed)


class qMRMLNodeComboBox(QComboBox):  # noqa: N801
    pass


class qMRMLWidget(QWidget):  # noqa: N801
    pass


def realistic_state(work: Path):
    """Everything shown, from the real Logic on real MRML."""
    import slicer
    from slicer_fixture import MRMLApplication

    application = MRMLApplication()
    slicer.mrmlScene, slicer.modules = application.scene, application.modules
    import numpy as np

    from TransferSegLib.scene import find_segment_id, segment_mask, segment_names
    from TransferSegLib.scene.jobs import JobRow
    from TransferSegLib.scene.logic import TransferSegLogic
    from TransferSegLib.scene.runs import TrainingRun
    from TransferSegLib.scene.training_logic import validation_note
    from TransferSegPanel import texts

    logic = TransferSegLogic(python=sys.executable, work_root=str(work))
    models = logic.base_models()
    volume, segmentation = logic.load_sample_case(["liver", "spleen", "kidney_left", "kidney_right"])
    cases = logic.add_case(volume, segmentation, ["liver", "spleen"]).cases
    liver = segment_mask(segmentation, find_segment_id(segmentation, "liver"), volume)
    every_fourth = np.zeros_like(liver)
    every_fourth[::4] = liver[::4]
    sparse = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "liver, every 4th slice")
    sparse.CreateDefaultDisplayNodes()
    sparse.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segment = sparse.GetSegmentation().AddEmptySegment("liver", "liver", (0.86, 0.56, 0.45))
    slicer.util.updateSegmentBinaryLabelmapFromArray(every_fourth.astype(np.uint8), sparse, segment, volume)
    added = logic.add_case(volume, sparse, ["liver"], cases, sparse=True, validation=True)
    cases = added.cases

    class Job:  # the events a fine-tuning job writes, part-way through
        def poll(self):
            return [{"kind": "started", "device": "cuda:0"},
                    {"kind": "progress", "iteration": 240, "total_iterations": 600, "percent": 40.0, "loss": 0.412,
                     "eta_s": 420},
                    {"kind": "validation", "iteration": 200, "dice": {"liver": 0.912, "spleen": 0.871},
                     "mean_dice": 0.891}]

        def status(self):
            return "running"

    logic.training = TrainingRun(job=Job(), directory=work / "jobs" / "20261201-101500-liver-spleen",
                                 output=work / "models" / "liver-spleen", labels=["liver", "spleen"])
    logic.poll_training()
    jobs = [JobRow(str(logic.training.directory), "liver-spleen", "running", 40.0, 0.891, "cuda:0", ""),
            JobRow(str(work / "jobs" / "20261130-171000-liver"), "liver", "finished", 100.0, 0.874, "cuda:0",
                   str(work / "models" / "liver")),
            JobRow(str(work / "jobs" / "20261130-160200-spleen"), "spleen", "cancelled", 22.0, None, "cpu", "")]
    home = Path("~/.transferseg")  # where the models of a real session are (the temporary folder is not shown)
    for row in jobs:
        row.model = str(home / "models" / "liver") if row.model else ""
    prediction = f"{volume.GetName()} – liver"
    state = {
        "models": [texts.model_row(m) for m in models], "card": texts.model_card(models[0]),
        "volume": volume.GetName(), "segmentation": segmentation.GetName(),
        "segments": segment_names(segmentation), "ticked": ["liver", "spleen"],
        "cases": [texts.case_row(c.volume.GetName(), c.segmentation.GetName(), c.segments, c.sparse, c.slices,
                                 c.validation) for c in cases],
        "count": texts.case_count(len(cases), sum(c.validation for c in cases)),
        "targets": ", ".join(["liver", "spleen"]), "validation": validation_note(cases),
        "status": texts.training_status(logic.training), "percent": logic.training.percent(),
        "prediction": prediction,
        "predict_status": (f"Created '{prediction}'. Correct it (Edit in Segment Editor), tick the classes you "
                           f"reviewed, then add it as a training case."),
        "reviewed": ["liver", "spleen"], "reviewed_ticked": ["liver"],
        "metrics": texts.metric_rows([{"label": "liver", "dice": 0.934, "hd95": 4.2},
                                      {"label": "spleen", "dice": 0.881, "hd95": 6.0}]),
        "jobs": [texts.job_row(r) for r in jobs],
        "devices": ["GPU 0: NVIDIA RTX A5000 (24 GB)"], "model_dir": str(home / "models" / "liver"),
    }
    application.scene.Clear(1)
    return state


def fill_table(table: QTableWidget, rows, fit=()):
    """As the panel's ``TransferSegPanel.common.fill_table``: ``fit`` columns to contents, the others stretch."""
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(str(text)))
    header = table.horizontalHeader()
    for c in range(table.columnCount()):
        header.setSectionResizeMode(c, QHeaderView.ResizeToContents if c in fit else QHeaderView.Stretch)


def fill_ticks(widget: QListWidget, names, ticked):
    for name in names:
        item = QListWidgetItem(name)
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked if name in ticked else Qt.Unchecked)
        widget.addItem(item)


def render(state, output: Path, width: int = 620) -> dict:
    app = QApplication.instance() or QApplication([])
    app.setFont(QFont("DejaVu Sans", 9))
    loader = QUiLoader()
    for cls in (ctkCollapsibleButton, qMRMLNodeComboBox, qMRMLWidget):
        loader.registerCustomWidget(cls)
    handle = QFile(str(ROOT / "Resources" / "UI" / "TransferSeg.ui"))
    handle.open(QFile.ReadOnly)
    root = loader.load(handle)
    if root is None:
        raise SystemExit("QUiLoader failed: " + loader.errorString())
    find = lambda cls, name: root.findChild(cls, name)  # noqa: E731
    fill_table(find(QTableWidget, "modelsTable"), state["models"], fit=(1, 2, 3, 4))
    find(QTableWidget, "modelsTable").selectRow(0)
    find(QLabel, "modelCardLabel").setText(state["card"])
    for name, text in (("caseVolumeSelector", state["volume"]), ("caseSegmentationSelector", state["segmentation"]),
                       ("targetVolumeSelector", state["volume"]), ("correctedSegmentationSelector", state["prediction"]),
                       ("referenceSegmentationSelector", state["segmentation"])):
        find(QComboBox, name).addItem(text)
    find(QComboBox, "deviceComboBox").addItems(state["devices"])
    find(QComboBox, "strategyComboBox").addItem("last-layers")
    fill_ticks(find(QListWidget, "segmentsList"), state["segments"], state["ticked"])
    fill_table(find(QTableWidget, "casesTable"), state["cases"], fit=(3,))
    find(QLabel, "caseCountLabel").setText(state["count"])
    find(QLabel, "targetLabelsLabel").setText(state["targets"])
    find(QLabel, "validationNoteLabel").setText(state["validation"])
    find(QPushButton, "startButton").setText("Stop")
    bar = find(QProgressBar, "trainingProgressBar")
    bar.setValue(state["percent"])
    find(QLabel, "trainingStatusLabel").setText(state["status"])
    find(root.findChild(QWidget, "modelDirectoryLineEdit").__class__, "modelDirectoryLineEdit").setText(state["model_dir"])
    find(QLabel, "predictStatusLabel").setText(state["predict_status"])
    fill_ticks(find(QListWidget, "reviewedSegmentsList"), state["reviewed"], state["reviewed_ticked"])
    fill_table(find(QTableWidget, "metricsTable"), state["metrics"], fit=(1, 2))
    fill_table(find(QTableWidget, "jobsTable"), state["jobs"], fit=(1, 2))
    for hidden in ("welcomeLabel", "dependenciesWidget", "busyDeviceWidget", "downloadProgressBar",
                   "cancelDownloadButton", "predictProgressBar", "caseChannelsWidget", "predictChannelsWidget"):
        find(QWidget, hidden).setVisible(False)
    find(ctkCollapsibleButton, "baseModelCollapsibleButton").collapsed = True  # folded: a job is training
    find(ctkCollapsibleButton, "jobsCollapsibleButton").collapsed = False
    root.resize(width, 400)
    root.adjustSize()
    root.resize(width, root.sizeHint().height())
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(".partial-" + output.name)
    if not root.grab().save(str(temporary), "PNG"):
        raise SystemExit(f"could not write {output}")
    os.replace(temporary, output)
    shown = {name: find(QLabel, name).text() for name in ("trainingStatusLabel", "validationNoteLabel", "caseCountLabel")}
    return {"output": str(output), "width": root.width(), "height": root.height(), "shown": shown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "docs" / "screenshots" / "panel.png"),
                        help="PNG to write (default: docs/screenshots/panel.png)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="panel-screenshot-") as work:
        state = realistic_state(Path(work))
        print(json.dumps(render(state, Path(args.output))))


if __name__ == "__main__":
    main()
