"""One volume per input channel: the selectors a multi-channel model (BraTS: T1c, T1, T2, FLAIR) needs.

A case (section 2) and a prediction (section 4) of a model that reads several
co-registered images name one volume node per channel. The .ui's own volume
selector is channel 1 (its label takes the model's first channel name); the others
get a selector each, labelled with their channel name, in an empty form of the .ui
(``caseChannelsWidget`` / ``predictChannelsWidget``), shown only while the selected
model has more than one channel. Selectors are made once and reused (hidden when not
needed), so switching models never deletes widgets under Qt's feet. The channels a
model reads come from its card or catalog entry (``logic.model_channels``: JSON only).
"""

from typing import Dict, List, Optional, Sequence, Tuple

import qt
import slicer

from TransferSegLib.scene.channels import channel_labels


class ChannelSelectors:
    """Selectors for channels 2, 3... in ``container``; ``first_label`` is the label of channel 1's selector."""

    def __init__(self, container, first_label, what: str):
        self.container, self.first_label, self.what = container, first_label, what
        self.first_text = str(first_label.text or "Volume:")
        self.labels: List[str] = []  # every channel's label, channel 1 first; empty: one channel
        self.names: List[str] = []  # the model's own channel names (empty when it names none)
        self.rows: List[Tuple[object, object]] = []  # (label, selector) made so far
        first_label.text = self.first_text
        container.setVisible(False)

    def _row(self, index: int):
        while len(self.rows) <= index:
            combo = slicer.qMRMLNodeComboBox()
            combo.nodeTypes = ["vtkMRMLScalarVolumeNode"]
            combo.showChildNodeTypes = False
            combo.noneEnabled = True  # nothing is picked for the user: an empty channel is refused by name
            combo.addEnabled = combo.removeEnabled = combo.renameEnabled = False
            combo.setMRMLScene(slicer.mrmlScene)
            combo.setCurrentNode(None)
            label = qt.QLabel()
            self.container.layout().addRow(label, combo)
            self.rows.append((label, combo))
        return self.rows[index]

    def show(self, names: Sequence[str], count: Optional[int]) -> None:
        """Offer one selector per channel of a model of ``count`` channels named ``names``."""
        labels = channel_labels(names, count) if count and count > 1 else []
        self.names = list(names) if len(names) == len(labels) else []
        if labels == self.labels:
            return
        self.labels = labels
        self.first_label.text = f"Volume ({labels[0]}):" if labels else self.first_text
        for index in range(max(len(labels) - 1, len(self.rows))):
            if index < len(labels) - 1:
                label, combo = self._row(index)
                label.text = f"{labels[index + 1]}:"
                combo.toolTip = (f"The {labels[index + 1]} volume of {self.what}: co-registered with the first "
                                 f"volume, on its grid.")
            else:
                label, combo = self.rows[index]
            label.setVisible(index < len(labels) - 1)
            combo.setVisible(index < len(labels) - 1)
        self.container.setVisible(len(labels) > 1)

    def nodes(self) -> List[object]:
        """The picked volumes of channels 2, 3... (None where nothing is picked)."""
        return [self.rows[i][1].currentNode() for i in range(len(self.labels) - 1)]


class ChannelsSection:
    """Mixed into the widget: keeps both sets of selectors in step with the models picked."""

    def _set_up_channels(self) -> None:
        self._channel_cache: Dict[str, Tuple[List[str], Optional[int]]] = {}
        self._case_channels = ChannelSelectors(self.ui.caseChannelsWidget, self.ui.caseVolumeLabel, "this case")
        self._predict_channels = ChannelSelectors(self.ui.predictChannelsWidget, self.ui.targetVolumeLabel,
                                                  "the image to segment")

    def _channels_of(self, model: str) -> Tuple[List[str], Optional[int]]:
        if model not in self._channel_cache:  # read once per model (the panel refreshes every second)
            try:
                self._channel_cache[model] = self.logic.model_channels(model) if model else ([], 1)
            except Exception:  # a damaged card: shown as one channel; starting the job explains the problem
                self._channel_cache[model] = ([], 1)
        return self._channel_cache[model]

    def _show_channels(self) -> None:
        p = self._parameterNode
        if p is None:
            return
        self._case_channels.show(*self._channels_of(p.baseModel or "default"))
        self._predict_channels.show(*self._channels_of(p.modelDirectory or p.lastModel))
