"""The Logic's prediction and review part: predict in a worker, compare with a reference in a worker.

The volume is written once (uncompressed: fast) and ``transferseg predict`` runs in
its own process; the result becomes a new segmentation node. "Compare with
reference" writes both segmentations with shared label values and runs
``transferseg evaluate --json`` (Dice, HD95 per class) in a worker too: surface
distances on a full CT take seconds, which the main thread must not spend.
"""

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import SimpleITK as sitk

from TransferSegLib.errors import CaseError, JobError
from TransferSegLib.names import normalize_label_name
from TransferSegLib.scene.channels import (
    check_channel_count, check_channels, image_argument, remember_channels, write_channel_files,
)
from TransferSegLib.scene.export import check_pair, write_image_atomic
from TransferSegLib.scene.geometry import write_volume_nrrd
from TransferSegLib.scene.imports import import_prediction
from TransferSegLib.scene.models import channel_fields
from TransferSegLib.scene.process import CommandProcess
from TransferSegLib.scene.runs import PredictionRun, read_model_card
from TransferSegLib.scene.segmentations import find_segment_id, labelmap_array, segment_names
from TransferSegLib.scene.tasks import BackgroundTask, last_json, last_percent, log_tail, metric_rows


def common_segments(prediction, reference) -> list:
    """Segment names both segmentations have (matched by normalized name), in the prediction's order."""
    theirs = {normalize_label_name(n) for n in segment_names(reference)}
    return [n for n in segment_names(prediction) if normalize_label_name(n) in theirs]


#: ``transferseg predict``'s progress lines: ``sliding window (44%), 12 s, about 15 s left``.
_WINDOW_PERCENT = re.compile(r"sliding window \((\d{1,3})%\)")


class PredictionLogic:
    """Mixed into ``TransferSegLogic``: needs ``self.python``, ``self.work_root``, ``self.prediction``."""

    python: str
    work_root: Path
    prediction: Optional[PredictionRun]

    def _scratch_folder(self, prefix: str) -> Path:
        root = self.work_root / "predictions"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=str(root)))

    def start_prediction(self, volume, model_dir, device: str = "auto", tta: bool = False,
                         largest_component: Optional[bool] = None, channels: Sequence = ()) -> PredictionRun:
        """Export the volume and start predicting it in a worker process; returns at once.

        ``largest_component``: None follows the model's per-class clean-up decisions (model.json),
        True/False forces it on/off for every class. ``channels``: for a model of several input
        channels, the volumes of channels 2, 3... in the model's order (``volume`` is channel 1),
        each on ``volume``'s grid."""
        if self.prediction is not None and self.prediction.process.poll() is None:
            raise JobError("A prediction is already running: wait for it or stop it.")
        card = read_model_card(model_dir)
        inputs = channel_fields(card.get("input_channels"), card.get("network") or {})
        names = inputs["input_channels"]
        check_channel_count(str(card["name"]), names, inputs["channel_count"], 1 + len(channels),
                            f"the prediction of '{volume.GetName() if volume is not None else '(no volume)'}'")
        check_channels(volume, list(channels), names, f"Predicting '{volume.GetName()}'")
        folder = self._scratch_folder("predict-")
        if channels:
            image = image_argument(write_channel_files([volume] + list(channels), folder, "image"), names)
        else:
            write_volume_nrrd(volume, folder / "image.nrrd")
            image = str(folder / "image.nrrd")
        output = folder / "prediction.nii.gz"
        args = ["predict", "--model", str(model_dir), "--image", image, "--output", str(output),
                "--device", device]
        if tta:
            args.append("--tta")
        if largest_component is not None:
            args.append("--largest-component" if largest_component else "--no-largest-component")
        process = CommandProcess(args, folder / "predict.log", python=self.python)
        self.prediction = PredictionRun(process, volume, Path(model_dir), str(card["name"]), list(card["labels"]), output,
                                        channels=list(channels), channel_names=list(names))
        return self.prediction

    def prediction_percent(self) -> Optional[int]:
        """How far the running prediction's sliding window is (0-100, from ``transferseg predict``'s
        own progress lines in its log), or None before its first line."""
        run = self.prediction
        return None if run is None else last_percent(log_tail(run.process.log_path), _WINDOW_PERCENT)

    def prediction_status(self) -> str:
        """'Predicting CT 3 with liver-2… 44 %, 42 s' for the panel's status line."""
        run = self.prediction
        if run is None:
            return ""
        elapsed = time.monotonic() - run.started
        percent = self.prediction_percent()
        done = f"{percent} %, " if percent is not None else ""
        return f"Predicting '{run.volume.GetName()}' with '{run.model_name}'… {done}{elapsed:.0f} s"

    def poll_prediction(self):
        """None while predicting; then the new segmentation node (raises if prediction failed)."""
        run = self.prediction
        if run is None:
            return None
        code = run.process.poll()
        if code is None:
            return None
        self.prediction = None
        if code != 0 or not run.output.is_file():
            raise run.process.failure()
        node = import_prediction(run.output, run.volume, run.model_name, run.labels)
        remember_channels(node, run.channels, run.channel_names)
        shutil.rmtree(run.output.parent, ignore_errors=True)
        return node

    def cancel_prediction(self) -> None:
        """Stop the prediction now (the process tree is killed; the panel does not wait for it)."""
        if self.prediction is not None:
            self.prediction.process.cancel()
            shutil.rmtree(self.prediction.output.parent, ignore_errors=True)
            self.prediction = None

    def predict(self, volume, model_dir, device: str = "auto", tta: bool = False,
                largest_component: Optional[bool] = None, timeout: Optional[float] = None, channels: Sequence = ()):
        """Predict and wait: the new segmentation node "<volume> – <model>"."""
        run = self.start_prediction(volume, model_dir, device, tta, largest_component, channels)
        run.process.wait(timeout)
        return self.poll_prediction()

    # --- compare with a reference ------------------------------------------------------------------

    def start_comparison(self, segmentation, reference, volume=None,
                         classes: Optional[Sequence[str]] = None) -> BackgroundTask:
        """Dice and HD95 per class of ``segmentation`` against ``reference`` (a worker; poll the task)."""
        if segmentation is None or reference is None:
            raise CaseError("Pick both the segmentation to check and the reference segmentation.")
        if segmentation is reference:
            raise CaseError("The segmentation and the reference are the same node: pick another reference.")
        volume = volume or segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
        if volume is None:
            raise CaseError(f"'{segmentation.GetName()}' does not say which volume it belongs to; pick its volume.")
        names = list(classes) if classes else common_segments(segmentation, reference)
        if not names:
            raise CaseError(f"'{segmentation.GetName()}' and '{reference.GetName()}' share no segment name: nothing "
                            f"to compare. Rename the segments so that the same organ has the same name.")
        folder = self._scratch_folder("compare-")
        paths = []
        index = {normalize_label_name(n): i for i, n in enumerate(names, start=1)}
        for node, stem in ((segmentation, "prediction"), (reference, "reference")):
            grid = check_pair(volume, node)
            values = {find_segment_id(node, n): index[normalize_label_name(n)] for n in segment_names(node)
                      if normalize_label_name(n) in index}
            path = folder / f"{stem}.nii.gz"  # empty classes are fine here: a missed organ scores 0
            write_image_atomic(grid.stamp(sitk.GetImageFromArray(labelmap_array(node, volume, values))), path)
            paths.append(path)
        args = ["evaluate", "--prediction", str(paths[0]), "--reference", str(paths[1]),
                "--labels", ",".join(names), "--json"]
        return BackgroundTask("comparison", args, folder, python=self.python,
                              parse=lambda text: metric_rows(last_json(text)), cleanup=True)


def registered_name(text: str) -> str:
    """The model name ``transferseg models add / import-bundle`` printed."""
    found = re.findall(r"registered (?:the bundle as )?'([^']+)'", text)
    if not found:
        raise ValueError("the command did not say which name it registered")
    return found[-1]
