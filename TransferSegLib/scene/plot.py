"""The live training plot: loss and validation Dice as Slicer table + plot nodes.

Plain MRML nodes (not a widget) so that the curves are saved with the scene, can be
shown in any plot view, and are built the same way headless and in the application.
"""

import math
from typing import Dict, Optional

import slicer
import vtk

LOSS_COLOR = (0.86, 0.49, 0.36)
DICE_COLOR = (0.35, 0.60, 0.86)


def _table(name: str, value_column: str):
    table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", slicer.mrmlScene.GenerateUniqueName(name))
    for column_name in ("iteration", value_column):
        column = vtk.vtkDoubleArray()
        column.SetName(column_name)
        table.AddColumn(column)
    return table


def _series(name: str, table, value_column: str, color, y_axis: str):
    series = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", slicer.mrmlScene.GenerateUniqueName(name))
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetXColumnName("iteration")
    series.SetYColumnName(value_column)
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone if y_axis == "loss"
                          else slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
    series.SetColor(*color)
    return series


class TrainingPlot:
    """A chart with the training loss and the mean validation Dice against iterations."""

    def __init__(self, title: str = "TransferSeg training"):
        self.loss_table = _table(f"{title} loss", "loss")
        self.dice_table = _table(f"{title} Dice", "mean Dice")
        self.loss_series = _series(f"{title} loss", self.loss_table, "loss", LOSS_COLOR, "loss")
        self.dice_series = _series(f"{title} validation Dice", self.dice_table, "mean Dice", DICE_COLOR, "dice")
        self.chart = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", slicer.mrmlScene.GenerateUniqueName(title))
        self.chart.SetTitle(title)
        self.chart.SetXAxisTitle("iteration")
        self.chart.SetYAxisTitle("loss / Dice")
        self.chart.AddAndObservePlotSeriesNodeID(self.loss_series.GetID())
        self.chart.AddAndObservePlotSeriesNodeID(self.dice_series.GetID())

    @staticmethod
    def _append(table, iteration: float, value: float) -> None:
        row = table.AddEmptyRow()
        table.SetCellText(row, 0, str(float(iteration)))
        table.SetCellText(row, 1, str(float(value)))

    def add_event(self, event: Dict) -> None:
        """Add the point a job event carries (``progress`` → loss, ``validation`` → Dice)."""
        kind = event.get("kind") or event.get("event")
        iteration = event.get("iteration")
        if iteration is None:
            return
        if kind == "progress":
            value = _finite(event.get("loss"))
            if value is not None:
                self._append(self.loss_table, iteration, value)
        elif kind == "validation":
            value = _finite(event.get("mean_dice"))
            if value is not None:
                self._append(self.dice_table, iteration, value)

    def points(self) -> Dict[str, int]:
        return {"loss": self.loss_table.GetNumberOfRows(), "dice": self.dice_table.GetNumberOfRows()}

    def remove(self) -> None:
        for node in (self.chart, self.loss_series, self.dice_series, self.loss_table, self.dice_table):
            if node is not None and node.GetScene() is not None:
                slicer.mrmlScene.RemoveNode(node)


def _finite(value) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
