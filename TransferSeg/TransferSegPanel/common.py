"""Helpers every section uses: error display, wait cursor, table filling, tick lists."""

import logging
import traceback
from typing import List, Sequence

import qt
import slicer

from TransferSegLib.errors import TransferSegError


class ErrorDisplay:
    """Show a failure as a message saying what to do (expected errors without a traceback);
    with ``wait``, a wait cursor while the block runs."""

    def __init__(self, what: str, wait: bool = False):
        self.what, self.wait = what, wait

    def __enter__(self):
        if self.wait:
            qt.QApplication.setOverrideCursor(qt.QCursor(qt.Qt.WaitCursor))
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if self.wait:
            qt.QApplication.restoreOverrideCursor()
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


class WaitCursor:
    """A wait cursor while the block runs (anything that may take over half a second)."""

    def __enter__(self):
        qt.QApplication.setOverrideCursor(qt.QCursor(qt.Qt.WaitCursor))
        return self

    def __exit__(self, *exc) -> bool:
        qt.QApplication.restoreOverrideCursor()
        return False


def fill_table(table, rows: Sequence[Sequence[str]], tooltips: Sequence[str] = (), fit: Sequence[int] = ()) -> None:
    """Rows of text in a table that fits the panel: the ``fit`` columns take their contents' width,
    the others share the rest (long names are elided, the full text is in the tooltip)."""
    table.setRowCount(len(rows))
    for row, texts in enumerate(rows):
        for column, text in enumerate(texts):
            item = qt.QTableWidgetItem(str(text))
            item.setToolTip(tooltips[row] if row < len(tooltips) and tooltips[row] else str(text))
            table.setItem(row, column, item)
    header = table.horizontalHeader()
    for column in range(table.columnCount):
        header.setSectionResizeMode(column, qt.QHeaderView.ResizeToContents if column in fit else qt.QHeaderView.Stretch)


def fill_ticks(widget, names: Sequence[str], ticked: Sequence[str]) -> None:
    widget.clear()
    chosen = set(ticked)
    for name in names:
        item = qt.QListWidgetItem(name)
        item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
        item.setCheckState(qt.Qt.Checked if name in chosen else qt.Qt.Unchecked)
        widget.addItem(item)


def ticked(widget) -> List[str]:
    items = [widget.item(i) for i in range(widget.count)]
    return [item.text() for item in items if item.checkState() == qt.Qt.Checked]


def set_all_ticks(widget, checked: bool) -> None:
    for i in range(widget.count):
        widget.item(i).setCheckState(qt.Qt.Checked if checked else qt.Qt.Unchecked)
