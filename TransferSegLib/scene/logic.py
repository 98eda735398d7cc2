"""The TransferSeg module's Logic: the whole panel workflow, usable with no panel.

From Slicer's Python console, the self-test or a headless test, the same calls
drive a fine-tune → predict → correct → fine-tune-again loop on scene nodes:

    logic = TransferSegLogic()
    run = logic.start_finetune([SceneCase(ct, seg, ["liver"])], base="default", time_budget_s=300)
    logic.wait_for_training()             # or poll_training() from a timer
    node = logic.predict(other_ct, run.model)

Long work never runs in Slicer's process: training is a job of the job layer and
prediction a CLI process, both started with ``python`` (``PythonSlicer`` in Slicer,
injectable for tests). Engine modules that need torch are imported lazily, so the
module loads in a Slicer without torch or monai.
"""

import datetime
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import slicer

from TransferSegLib.errors import CaseError, JobError, ModelError, TransferSegError
from TransferSegLib.names import normalize_label_name
from TransferSegLib.paths import resources_dir, transferseg_home
from TransferSegLib.scene import SceneCase, case_from_segmentation, check_case, export_cases, import_prediction, training_labels
from TransferSegLib.scene.geometry import image_from_volume
from TransferSegLib.scene.models import ModelRow, model_rows
from TransferSegLib.scene.plot import TrainingPlot
from TransferSegLib.scene.process import CommandProcess, default_python
from TransferSegLib.scene.runs import PredictionRun, TrainingRun, read_model_card

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
STRATEGIES = ("last-layers", "decoder", "staged", "full", "scratch")


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


def _catalog():
    try:
        from TransferSegLib.models import catalog
    except ImportError as exc:
        raise ModelError(
            "This TransferSeg has no model catalog: use the shipped 'default' model or a model folder."
        ) from exc
    return catalog


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40] or "model"


class TransferSegLogic(_LogicBase):
    """Everything the panel does, callable without it. ``python`` runs the workers."""

    def __init__(self, python: Optional[str] = None, work_root: Optional[str] = None):
        _LogicBase.__init__(self)
        self.cache = use_slicer_cache()
        self.python = python or default_python()
        self.work_root = Path(work_root) if work_root else transferseg_home()
        self.training: Optional[TrainingRun] = None
        self.prediction: Optional[PredictionRun] = None

    # --- dependencies ---------------------------------------------------------------------------

    @staticmethod
    def missing_dependencies() -> List[str]:
        """Import names of engine dependencies not installed in this Python."""
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

    # --- devices ----------------------------------------------------------------------------------

    @staticmethod
    def available_devices() -> List[Tuple[str, str]]:
        """(device, label) pairs: each CUDA GPU with its memory, then the CPU.

        Asks ``nvidia-smi`` rather than torch, so listing GPUs costs Slicer no CUDA context.
        """
        devices: List[Tuple[str, str]] = []
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                out = subprocess.run([smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
                for line in out.strip().splitlines():
                    index, name, memory = [p.strip() for p in line.split(",")[:3]]
                    devices.append((f"cuda:{index}", f"GPU {index}: {name} ({float(memory) / 1024:.0f} GB)"))
            except (OSError, ValueError, subprocess.SubprocessError):
                devices = []
        label = "Automatic (first GPU, else CPU)" if devices else "Automatic (CPU: no CUDA GPU found)"
        return [("auto", label)] + devices + [("cpu", "CPU (slow: 10-50x slower than a GPU)")]

    # --- base models --------------------------------------------------------------------------

    def base_models(self) -> List[ModelRow]:
        """The model table: shipped default, catalog models, the user's fine-tuned models, scratch."""
        return model_rows(resources_dir(), self.work_root)

    @staticmethod
    def download_base_model(name: str, progress: Optional[Callable[[int, int], None]] = None):
        """Download (and verify) a catalog model; ``progress(done_bytes, total_bytes)``."""
        catalog = _catalog()
        return catalog.download_model(name, progress=progress)

    @staticmethod
    def add_local_model(path: str, name: Optional[str] = None):
        """Register a model folder, checkpoint or MONAI bundle; returns its catalog name."""
        if (Path(path) / "model.json").is_file():
            read_model_card(path)  # a fine-tuned model folder is usable as it is
            return str(Path(path).resolve())
        catalog = _catalog()
        return catalog.add_user_model(path, name=name)

    # --- cases --------------------------------------------------------------------------------

    @staticmethod
    def make_case(volume, segmentation, segments: Sequence[str]) -> SceneCase:
        case = SceneCase(volume, segmentation, list(segments))
        check_case(case)
        return case

    @staticmethod
    def case_from_correction(segmentation, volume=None) -> SceneCase:
        return case_from_segmentation(segmentation, volume)

    # --- fine-tuning --------------------------------------------------------------------------

    def start_finetune(
        self,
        cases: Sequence[SceneCase],
        base: str = "default",
        strategy: str = "last-layers",
        time_budget_s: Optional[float] = 600.0,
        iterations: Optional[int] = None,
        device: str = "auto",
        labels: Optional[Sequence[str]] = None,
        name: str = "",
        seed: int = 0,
        train: Optional[Dict[str, Any]] = None,
        plot: bool = True,
    ) -> TrainingRun:
        """Export the cases and start a fine-tuning job; returns at once.

        ``labels`` default to the ticked segment names of all cases, in order; when
        ``base`` is a model folder (fine-tuning again) its classes keep their values.
        """
        if self.training is not None and self.training.running:
            raise JobError(f"A fine-tuning job is already running ({self.training.directory}): stop it first.")
        if strategy not in STRATEGIES:
            raise TransferSegError(f"Unknown strategy '{strategy}': use one of {', '.join(STRATEGIES)}.")
        if str(base).strip().lower() in ("none", "scratch") and strategy != "scratch":
            raise ModelError(f"Without a base model there are no pretrained weights for the '{strategy}' strategy: "
                             f"pick a base model, or the 'scratch' strategy.")
        previous: List[str] = []
        if Path(str(base)).is_dir() and (Path(str(base)) / "model.json").is_file():
            # Keep the previous model's order for the classes the cases still annotate.
            ticked = {normalize_label_name(n) for case in cases for n in case.segments}
            previous = [n for n in read_model_card(base)["labels"][1:] if normalize_label_name(n) in ticked]
        target = list(labels) if labels else training_labels(cases, previous)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        model_name = name or f"{'-'.join(_slug(n) for n in target[:3])}-{stamp}"
        directory = self.work_root / "jobs" / f"{stamp}-{_slug(model_name)}"
        while directory.exists():
            directory = directory.with_name(directory.name + "x")
        exported, target = export_cases(cases, directory / "cases", target)
        output = self.work_root / "models" / _slug(model_name)
        for round_number in range(2, 1000):  # each round keeps its own model folder
            if not output.exists():
                break
            output = output.with_name(f"{_slug(model_name)}-{round_number}")
        settings = dict(train or {})
        settings.setdefault("time_budget", time_budget_s)
        settings.setdefault("iterations", iterations)
        patch_size = settings.pop("patch_size", None)  # overrides the base model's patch size
        from TransferSegLib.jobs.api import start_job
        from TransferSegLib.jobs.spec import JobSpec

        spec = JobSpec(base=str(base), cases=exported, val_cases=[], labels=target, strategy=strategy,
                       output=str(output), train=settings, device=device, seed=seed, name=model_name,
                       patch_size=list(patch_size) if patch_size else None)
        job = start_job(spec, directory, python=self.python)
        self.training = TrainingRun(job=job, directory=Path(directory), output=output, labels=target,
                                    plot=TrainingPlot(f"TransferSeg {model_name}") if plot else None)
        return self.training

    def attach_training(self, directory) -> TrainingRun:
        """Follow a job started earlier (e.g. before Slicer restarted); replays its events."""
        from TransferSegLib.jobs.api import Job

        job = Job.attach(Path(directory))
        spec = getattr(job, "spec", None)
        run = TrainingRun(job=job, directory=Path(directory), output=Path(getattr(spec, "output", "") or directory),
                          labels=list(getattr(spec, "labels", []) or []), plot=TrainingPlot("TransferSeg training"))
        self.training = run
        self.poll_training()
        return run

    def poll_training(self) -> List[Dict[str, Any]]:
        """New events of the running job, applied to its state and plot (call from a timer)."""
        run = self.training
        if run is None:
            return []
        events = run.job.poll()
        for event in events:
            run.apply(event)
        if run.running and not events:
            run.check_worker(run.job.status())
        return events

    def cancel_training(self) -> None:
        if self.training is not None and self.training.running:
            self.training.job.cancel()

    def wait_for_training(self, timeout: Optional[float] = None, interval: float = 0.5,
                          on_events: Optional[Callable[[List[Dict[str, Any]]], None]] = None) -> TrainingRun:
        """Block until the job ends (console and self-test use; the panel polls instead)."""
        if self.training is None:
            raise JobError("No fine-tuning job was started.")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            events = self.poll_training()
            if on_events is not None and events:
                on_events(events)
            if not self.training.running:
                break
            if deadline is not None and time.monotonic() > deadline:
                self.cancel_training()
                raise JobError(f"The fine-tuning job did not finish within {timeout:.0f} s and was stopped.")
            time.sleep(interval)
        if self.training.state == "failed":
            raise TransferSegError(self.training.error or "Fine-tuning failed.")
        return self.training

    # --- prediction ---------------------------------------------------------------------------

    def start_prediction(self, volume, model_dir, device: str = "auto", tta: bool = False,
                         largest_component: bool = False) -> PredictionRun:
        """Export the volume and start predicting it in a worker process; returns at once."""
        if self.prediction is not None and self.prediction.process.poll() is None:
            raise JobError("A prediction is already running: wait for it or stop it.")
        card = read_model_card(model_dir)
        import SimpleITK as sitk

        folder = Path(tempfile.mkdtemp(prefix="predict-", dir=str(self._ensure(self.work_root / "predictions"))))
        image_path = folder / "image.nrrd"
        sitk.WriteImage(image_from_volume(volume), str(image_path), useCompression=True)
        output = folder / "prediction.nii.gz"
        args = ["predict", "--model", str(model_dir), "--image", str(image_path), "--output", str(output),
                "--device", device]
        if tta:
            args.append("--tta")
        if largest_component:
            args.append("--largest-component")
        process = CommandProcess(args, folder / "predict.log", python=self.python)
        self.prediction = PredictionRun(process, volume, Path(model_dir), str(card["name"]), list(card["labels"]), output)
        return self.prediction

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
        shutil.rmtree(run.output.parent, ignore_errors=True)
        return node

    def cancel_prediction(self) -> None:
        if self.prediction is not None:
            self.prediction.process.cancel()
            shutil.rmtree(self.prediction.output.parent, ignore_errors=True)
            self.prediction = None

    def predict(self, volume, model_dir, device: str = "auto", tta: bool = False,
                largest_component: bool = False, timeout: Optional[float] = None):
        """Predict and wait: the new segmentation node "<volume> – <model>"."""
        run = self.start_prediction(volume, model_dir, device, tta, largest_component)
        run.process.wait(timeout)
        return self.poll_prediction()

    # --- sample data and self-test ---------------------------------------------------------------

    @staticmethod
    def load_sample_case(labels: Sequence[str] = ("liver",)):
        """The shipped TotalSegmentator example CT and the chosen classes of its labelmap, as new nodes."""
        import SimpleITK as sitk

        from TransferSegLib.scene import load_case_into_scene

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
        return {"base": "default" if pretrained else "none", "strategy": "last-layers" if pretrained else "scratch",
                "iterations": 20, "time_budget_s": None, "device": "auto",
                "train": {"patch_size": [32, 32, 32], "batch_size": 2, "val_every": 20, "patience": 0}}

    @staticmethod
    def _ensure(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
