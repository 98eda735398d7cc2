"""The TransferSeg module's Logic: the whole panel workflow, usable with no panel.

From Slicer's Python console, the self-test or a headless test, the same calls
drive a fine-tune → predict → correct → fine-tune-again loop on scene nodes:

    logic = TransferSegLogic()
    added = logic.add_case(ct, seg, ["liver"])           # AddCaseResult: .case, .cases, .needs_confirmation
    run = logic.start_finetune(added.cases, base="default", time_budget_s=300)
    logic.wait_for_training()                              # or poll_training() from a timer
    node = logic.predict(other_ct, run.model)

Long work never runs in Slicer's process: training is a job of the job layer;
prediction, downloads, registering a model and comparing segmentations are CLI
processes, all started with ``python`` (``PythonSlicer`` in Slicer, injectable for
tests). Nothing here imports torch or MONAI, directly or through the engine.
"""

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import slicer

from TransferSegLib.errors import CaseError, ModelError
from TransferSegLib.names import normalize_label_name
from TransferSegLib.paths import resources_dir, transferseg_home
from TransferSegLib.scene.cases import SceneCase
from TransferSegLib.scene.devices import DeviceProbe, device_list, query_gpus
from TransferSegLib.scene.export import check_case, describe_slices
from TransferSegLib.scene.models import ModelRow, model_channels, model_rows
from TransferSegLib.scene.prediction_logic import PredictionLogic, registered_name
from TransferSegLib.scene.process import default_python
from TransferSegLib.scene.review import case_from_segmentation
from TransferSegLib.scene.runs import PredictionRun, TrainingRun, read_model_card
from TransferSegLib.scene.tasks import BackgroundTask, last_line_value
from TransferSegLib.scene.training_logic import TrainingLogic, validation_note  # noqa: F401

try:  # the application's base class (parameter node handling); absent from slicer-core
    from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic as _LogicBase
except ImportError:  # headless MRML: the same singleton parameter node, without Qt
    class _LogicBase:  # type: ignore[no-redef]
        def __init__(self, parent=None):
            self.moduleName = type(self).__name__[: -len("Logic")]

        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
                node.UnRegister(None)
                node.SetSingletonTag(self.moduleName)
                node.SetAttribute("ModuleName", self.moduleName)
                node = slicer.mrmlScene.AddNode(node)
            return node

# Python modules the engine needs at run time (import name → what to tell the user).
DEPENDENCIES = {"torch": "PyTorch (PyTorch extension)", "monai": "MONAI", "einops": "einops",
                "psutil": "psutil", "tqdm": "tqdm", "scipy": "SciPy"}


def use_slicer_cache() -> Optional[Path]:
    """Point downloads at Slicer's cache folder unless the user chose one.

    Set in the environment (not passed around) so the worker processes the panel
    starts resolve catalog models from the same folder as the panel.
    """
    if os.environ.get("TRANSFERSEG_CACHE", "").strip():
        return Path(os.environ["TRANSFERSEG_CACHE"]).expanduser()
    cache_path = getattr(getattr(slicer, "app", None), "cachePath", None)
    if not cache_path:
        return None
    folder = Path(str(cache_path)) / "TransferSeg"
    os.environ["TRANSFERSEG_CACHE"] = str(folder)
    return folder


@dataclass
class AddCaseResult:
    """What "Add current case" did: ``cases`` is the new list; nothing changed while confirmation is needed."""

    case: SceneCase
    cases: List[SceneCase] = field(default_factory=list)
    replaced: bool = False
    needs_confirmation: bool = False
    message: str = ""


class TransferSegLogic(TrainingLogic, PredictionLogic, _LogicBase):
    """Everything the panel does, callable without it. ``python`` runs the workers."""

    def __init__(self, python: Optional[str] = None, work_root: Optional[str] = None):
        _LogicBase.__init__(self)
        self.cache = use_slicer_cache()
        self.python = python or default_python()
        self.work_root = Path(work_root) if work_root else transferseg_home()
        self.training: Optional[TrainingRun] = None
        self.prediction: Optional[PredictionRun] = None
        self.task: Optional[BackgroundTask] = None  # a download or model registration
        self.devices: Optional[DeviceProbe] = None

    # --- dependencies ---------------------------------------------------------------------------

    @staticmethod
    def missing_dependencies() -> List[str]:
        """Import names of engine dependencies not installed in this Python (asked afresh each time)."""
        importlib.invalidate_caches()
        return [name for name in DEPENDENCIES if importlib.util.find_spec(name) is None]

    @staticmethod
    def install_dependencies(requirements_path: str) -> None:
        """Install what is missing, after asking: torch via the PyTorch extension, the rest via pip.

        Slicer's own SimpleITK, torch and requests are never replaced. Application only.
        """
        from TransferSegLib.scene.dependencies import install_dependencies

        install_dependencies(requirements_path, DEPENDENCIES)

    @staticmethod
    def requirements_path() -> str:
        return str(resources_dir() / "requirements.txt")

    # --- devices --------------------------------------------------------------------------------

    @staticmethod
    def available_devices() -> List[Tuple[str, str]]:
        """(device, label) pairs: automatic, each CUDA GPU with its memory, the CPU (blocking; console use)."""
        return device_list(query_gpus())

    def start_device_query(self) -> DeviceProbe:
        """Look for GPUs in the background; the panel shows ``self.devices.devices()`` and refreshes when ready."""
        self.devices = DeviceProbe()
        return self.devices

    # --- base models ----------------------------------------------------------------------------

    def base_models(self) -> List[ModelRow]:
        """The model table: shipped default, catalog models, the user's fine-tuned models, scratch (no torch)."""
        return model_rows(resources_dir(), self.work_root)

    @staticmethod
    def model_channels(name: str) -> Tuple[List[str], Optional[int]]:
        """(channel names, count) a base or fine-tuned model reads (None: any); JSON only. The panel
        shows one volume selector per channel, labelled with these names, when the count is over 1."""
        return model_channels(name, resources_dir())

    def _task_folder(self, kind: str) -> Path:
        folder = self.work_root / "tasks" / kind
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def start_download(self, name: str) -> BackgroundTask:
        """Download (and verify) a catalog model in a worker; poll ``task``, read ``task.percent()``."""
        if self.task is not None and self.task.poll() is None:
            raise ModelError(f"A {self.task.kind} is still running: wait for it or cancel it.")
        self.task = BackgroundTask("download", ["models", "download", name], self._task_folder("download"),
                                   python=self.python, parse=last_line_value)
        return self.task

    def add_local_model(self, path: str, name: Optional[str] = None):
        """A model folder is used as it is (its card is read, no torch); a checkpoint or bundle is
        registered by a worker (it builds the network to check the weights): returns the task."""
        if (Path(path) / "model.json").is_file():
            read_model_card(path)
            return str(Path(path).resolve())
        if self.task is not None and self.task.poll() is None:
            raise ModelError(f"A {self.task.kind} is still running: wait for it or cancel it.")
        args = ["models", "import-bundle", str(path)] + (["--name", name] if name else [])
        self.task = BackgroundTask("model registration", args, self._task_folder("register"), python=self.python,
                                   parse=registered_name)
        return self.task

    def delete_model(self, row: ModelRow) -> None:
        """Delete one of the user's fine-tuned model folders (shipped and catalog models are not deletable here)."""
        if row.source != "fine-tuned":
            raise ModelError(f"'{row.title or row.name}' is not one of your fine-tuned models; only those can be "
                             f"deleted here.")
        folder = Path(row.name)
        read_model_card(folder)  # refuse anything that is not a model folder
        shutil.rmtree(folder)

    # --- cases ----------------------------------------------------------------------------------

    @staticmethod
    def make_case(volume, segmentation, segments: Sequence[str], sparse: bool = False,
                  validation: bool = False, channels: Sequence = (), channel_names: Sequence[str] = ()) -> SceneCase:
        """A checked case (one read of the segmentation; raises ``CaseError`` naming what is wrong)."""
        case = SceneCase(volume, segmentation, list(segments), sparse=sparse, validation=validation,
                         channels=list(channels), channel_names=list(channel_names))
        check_case(case)
        return case

    def add_case(self, volume, segmentation, segments: Sequence[str], cases: Sequence[SceneCase] = (),
                 sparse: bool = False, validation: bool = False, replace: bool = False, channels: Sequence = (),
                 channel_names: Sequence[str] = ()) -> AddCaseResult:
        """Check a case and add it to ``cases``; a case with the same nodes is replaced only with ``replace``.

        Without ``replace``, an existing case with the same volume and segmentation
        gives ``needs_confirmation`` and leaves the list as it was: the panel asks first.
        ``channels``: for a model of several input channels, the volumes of channels 2, 3...
        (``volume`` is channel 1; each must be on its grid), ``channel_names`` all channels' names.
        """
        case = SceneCase(volume, segmentation, list(segments), sparse=sparse, validation=validation,
                         channels=list(channels), channel_names=list(channel_names))
        checked = check_case(case)
        return self._add(case, cases, replace, describe_slices(case, checked) if sparse else "")

    def _add(self, case: SceneCase, cases: Sequence[SceneCase], replace: bool, slices: str) -> AddCaseResult:
        listed = list(cases)
        where = next((i for i, c in enumerate(listed) if c.same_nodes(case)), None)
        detail = f" ({slices} annotated)" if slices else ""
        if where is not None and not replace:
            old = listed[where]
            return AddCaseResult(case, listed, needs_confirmation=True, message=(
                f"'{case.name}' with '{case.segmentation.GetName()}' is already a training case (segments: "
                f"{', '.join(old.segments)}). Replace it with the segments {', '.join(case.segments)}{detail}?"))
        if where is not None:
            listed[where] = case
            return AddCaseResult(case, listed, replaced=True,
                                 message=f"Replaced the case '{case.name}'{detail}.")
        listed.append(case)
        return AddCaseResult(case, listed, message=f"Added '{case.name}' ({', '.join(case.segments)}){detail}.")

    def confirm_replace(self, result: AddCaseResult) -> AddCaseResult:
        """The user agreed: replace the existing case with ``result.case`` (already checked)."""
        return self._add(result.case, result.cases, True, "")

    def add_correction(self, segmentation, reviewed: Optional[Sequence[str]], cases: Sequence[SceneCase] = (),
                       replace: bool = False, sparse: bool = False) -> AddCaseResult:
        """A corrected prediction as a case: only the ``reviewed`` segments are ground truth."""
        case = case_from_segmentation(segmentation, reviewed, sparse=sparse)
        return self._add(case, cases, replace, "")

    @staticmethod
    def case_from_correction(segmentation, reviewed: Optional[Sequence[str]] = None, volume=None) -> SceneCase:
        return case_from_segmentation(segmentation, reviewed, volume)

    # --- sample data and self-test ---------------------------------------------------------------

    @staticmethod
    def load_sample_case(labels: Sequence[str] = ("liver",)):
        """The shipped TotalSegmentator example CT and the chosen classes of its labelmap, as new nodes."""
        import SimpleITK as sitk

        from TransferSegLib.scene.imports import load_case_into_scene

        folder = resources_dir() / "SampleData" / "TotalSegmentator"
        try:
            names = json.loads((folder / "label_names.json").read_text(encoding="utf-8"))["total"]
            image = sitk.ReadImage(str(folder / "example_ct_sm.nii.gz"))
            labelmap = sitk.ReadImage(str(folder / "example_seg.nii.gz"))
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise CaseError(f"The sample data in '{folder}' cannot be read ({exc}). Reinstall TransferSeg.") from exc
        wanted = {normalize_label_name(n) for n in labels}
        chosen = {int(v): n for v, n in names.items() if normalize_label_name(n) in wanted}
        return load_case_into_scene(image, labelmap, chosen, "TransferSeg sample CT")

    @staticmethod
    def smoke_test_settings() -> Dict[str, Any]:
        """A few iterations on small patches: checks that the loop works, in about a minute on a CPU."""
        pretrained = (resources_dir() / "Models" / "default" / "model.json").is_file()
        return {"base": "default" if pretrained else "none", "strategy": "auto",
                "iterations": 20, "time_budget_s": None, "device": "auto",
                "train": {"patch_size": [32, 32, 32], "batch_size": 2, "val_every": 20, "patience": 0}}
