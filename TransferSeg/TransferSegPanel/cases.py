"""Section 2 (training cases) and the review part of section 5: ticks, add/replace, validation cases."""

import json
from typing import List

import slicer

from TransferSegLib.errors import TransferSegError
from TransferSegLib.scene import SceneCase, non_empty_segments, segment_names
from TransferSegLib.scene.review import source_volume
from TransferSegPanel import texts
from TransferSegPanel.common import ErrorDisplay, WaitCursor, fill_table, fill_ticks, set_all_ticks, ticked

TICKS = "TransferSeg.AnnotatedSegments"  # attributes on the segmentation node: saved with the scene
REVIEWED = "TransferSeg.ReviewedSegments"


def remembered(node, attribute: str):
    try:
        value = json.loads(node.GetAttribute(attribute) or "null") if node is not None else None
    except ValueError:
        return None
    return value if isinstance(value, list) else None


class CasesSection:
    def onCaseSegmentationChanged(self, node) -> None:
        """Ticks as the user left them for this segmentation; at first, its non-empty segments."""
        names = segment_names(node)
        chosen = remembered(node, TICKS)
        if chosen is None and node is not None:
            volume = source_volume(node) or (self._parameterNode.caseVolume if self._parameterNode else None)
            try:
                with WaitCursor():
                    chosen = non_empty_segments(node, volume) if volume is not None else names
            except TransferSegError:  # geometry problems are reported when the case is added
                chosen = names
        self._filling = True
        fill_ticks(self.ui.segmentsList, names, chosen or [])
        self._filling = False

    def onSegmentTicked(self, item=None) -> None:
        node = self._parameterNode.caseSegmentation if self._parameterNode else None
        if node is not None and not self._filling:
            node.SetAttribute(TICKS, json.dumps(ticked(self.ui.segmentsList)))

    def onSelectAllSegments(self) -> None:
        set_all_ticks(self.ui.segmentsList, True)
        self.onSegmentTicked()

    def onSelectNoSegments(self) -> None:
        set_all_ticks(self.ui.segmentsList, False)
        self.onSegmentTicked()

    def _scene_cases(self) -> List[SceneCase]:
        return [SceneCase(c.volume, c.segmentation, list(c.segments), sparse=c.sparse, validation=c.validation,
                          slices=c.slices, channels=list(c.channels), channel_names=list(c.channelNames))
                for c in (self._parameterNode.cases if self._parameterNode else [])
                if c.volume and c.segmentation and all(c.channels)]

    def _store_cases(self, cases: List[SceneCase]) -> None:
        from TransferSeg import TrainingCase

        self._parameterNode.cases = [TrainingCase(c.volume, c.segmentation, list(c.segments), c.sparse,
                                                  c.validation, c.slices, channels=list(c.channels),
                                                  channelNames=list(c.channel_names)) for c in cases]

    def onAddCase(self) -> None:
        p = self._parameterNode
        channels = self._case_channels  # one volume per further channel of a multi-channel base model
        with ErrorDisplay("This case cannot be used.", wait=True):
            self._apply(self.logic.add_case(p.caseVolume, p.caseSegmentation, ticked(self.ui.segmentsList),
                                            self._scene_cases(), sparse=p.sparse, channels=channels.nodes(),
                                            channel_names=channels.names))

    def _apply(self, result) -> None:
        """Store the new case list; an existing case is replaced only after the user agreed."""
        if result.needs_confirmation:
            if not slicer.util.confirmYesNoDisplay(result.message, windowTitle="TransferSeg"):
                return
            result = self.logic.confirm_replace(result)
        self._store_cases(result.cases)
        self.ui.trainingStatusLabel.text = result.message

    def onRemoveCase(self) -> None:
        row = self.ui.casesTable.currentRow()
        if 0 <= row < len(self._parameterNode.cases):
            del self._parameterNode.cases[row]

    def onToggleValidation(self) -> None:
        row = self.ui.casesTable.currentRow()
        cases = self._scene_cases()
        if 0 <= row < len(cases):
            cases[row].validation = not cases[row].validation
            self._store_cases(cases)

    def _show_cases(self) -> None:
        p = self._parameterNode
        rows = [texts.case_row(c.volume.GetName() if c.volume else "(deleted)",
                               c.segmentation.GetName() if c.segmentation else "(deleted)",
                               c.segments, c.sparse, c.slices, c.validation, 1 + len(c.channels)) for c in p.cases]
        fill_table(self.ui.casesTable, rows, fit=(3,))
        cases = self._scene_cases()
        self.ui.caseCountLabel.text = texts.case_count(len(cases), sum(c.validation for c in cases))

    # --- review (section 5) --------------------------------------------------------------------------

    def onCorrectedSegmentationChanged(self, node) -> None:
        """Reviewed ticks as the user left them; none at first (nothing is reviewed until ticked)."""
        self._filling = True
        fill_ticks(self.ui.reviewedSegmentsList, segment_names(node), remembered(node, REVIEWED) or [])
        self._filling = False

    def onReviewTicked(self, item=None) -> None:
        node = self._parameterNode.correctedSegmentation if self._parameterNode else None
        if node is not None and not self._filling:
            node.SetAttribute(REVIEWED, json.dumps(ticked(self.ui.reviewedSegmentsList)))

    def onAcceptCorrection(self) -> None:
        node = self._parameterNode.correctedSegmentation
        reviewed = ticked(self.ui.reviewedSegmentsList)
        with ErrorDisplay("The corrected segmentation cannot be used as a training case.", wait=True):
            self._apply(self.logic.add_correction(node, reviewed, self._scene_cases()))

    def onEditSegmentation(self) -> None:
        """The Segment Editor on the corrected segmentation, with the volume it was predicted on."""
        node = self._parameterNode.correctedSegmentation or self._parameterNode.caseSegmentation
        if node is None:
            return
        volume = source_volume(node) or self._parameterNode.caseVolume
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(node)
        if volume is not None:
            setter = getattr(editor, "setSourceVolumeNode", None) or getattr(editor, "setMasterVolumeNode")
            setter(volume)
