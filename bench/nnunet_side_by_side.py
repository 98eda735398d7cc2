"""nnU-Net v2 from scratch on the same liver cases as `transferseg demo`, timed.

Why this exists: nnU-Net v2 is what a user would otherwise train, so TransferSeg's
Dice and time are only meaningful next to nnU-Net's on the same training and test
cases. This script goes through nnU-Net's own dataset format and its own commands
(as subprocesses from a separate virtualenv, because nnunetv2's torchvision
dependency does not import beside the project's CPU torch), measures wall-clock and
CPU seconds of each step, and scores the held-out prediction with a plain numpy Dice.

Runs with any Python that has numpy and SimpleITK (the nnU-Net venv has both).

Usage:
    python bench/nnunet_side_by_side.py --out-json /work/nnunet/side_by_side.json
    python bench/nnunet_side_by_side.py --trainer nnUNetTrainer_5epochs --device cuda

Defaults: training case example_ct_sm.nii.gz (liver = label 5 of example_seg.nii.gz),
held-out case the 20-slice DICOM series example_ct_dicom (liver = label 5 of
example_seg_dicom.nii.gz), dataset 501, trainer nnUNetTrainer_1epoch, fold `all`
(one training case leaves nothing for cross-validation), CPU, `nice -n 10`.
"""

import argparse
import dataclasses
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
# Where the venv, nnU-Net folders and logs go (outside the repository); --nnunet-home overrides it.
NNUNET_HOME = Path(os.environ.get("TRANSFERSEG_NNUNET_HOME", "/work/nnunet"))


def default_sample_dir() -> Path:
    """The repo's shipped samples, or the shared copy when the repo's is incomplete."""
    needed = ["example_ct_sm.nii.gz", "example_seg.nii.gz", "example_ct_dicom", "example_seg_dicom.nii.gz"]
    for candidate in (REPO / "Resources/SampleData/TotalSegmentator",
                      REPO.parent / "shared/data/totalsegmentator-examples"):
        if all((candidate / n).exists() for n in needed):
            return candidate
    return REPO / "Resources/SampleData/TotalSegmentator"


@dataclasses.dataclass
class StepTiming:
    """One nnU-Net command: wall-clock and the CPU seconds its process tree used.

    cpu_s / wall_s near the core count means the step had the machine to itself;
    much lower means it waited (other work on the shared cores, or I/O).
    """

    name: str
    command: List[str]
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    returncode: int
    log: str

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s


@dataclasses.dataclass
class SideBySideResult:
    dataset: str
    trainer: str
    configuration: str
    device: str
    train_cases: List[str]
    test_cases: List[str]
    steps: List[StepTiming]
    held_out_dice: Dict[str, float]
    reference_voxels: Dict[str, int]
    predicted_voxels: Dict[str, int]
    training_case_dice_nnunet_validation: Optional[float]
    last_pseudo_dice: Optional[float]
    plans: Dict[str, object]
    versions: Dict[str, str]
    host: Dict[str, object]


# ---------------------------------------------------------------- dataset format

def read_image(path: Path) -> sitk.Image:
    """A NIfTI/NRRD file or a DICOM series folder (the series with the most slices)."""
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise SystemExit(f"{path}: no DICOM series found; point --test-image at a DICOM folder or a NIfTI file")
        files = max((reader.GetGDCMSeriesFileNames(str(path), s) for s in series), key=len)
        reader.SetFileNames(files)
        return reader.Execute()
    return sitk.ReadImage(str(path))


def binary_label(seg: sitk.Image, value: int, grid: sitk.Image) -> sitk.Image:
    """`seg == value` as uint8 on `grid`'s geometry.

    The DICOM case's reference is stored with a flipped y axis relative to the series,
    so it is resampled (nearest neighbour, identity transform) rather than assumed to
    share the index grid; where the geometry already matches this is an exact copy.
    """
    mask = sitk.Cast(seg == value, sitk.sitkUInt8)
    same_grid = (mask.GetSize() == grid.GetSize()
                 and np.allclose(mask.GetSpacing(), grid.GetSpacing(), atol=1e-4)
                 and np.allclose(mask.GetOrigin(), grid.GetOrigin(), atol=1e-3)
                 and np.allclose(mask.GetDirection(), grid.GetDirection(), atol=1e-5))
    if not same_grid:
        mask = sitk.Resample(mask, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    mask.CopyInformation(grid)
    return mask


def write_atomic(image: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp_" + path.name)
    sitk.WriteImage(image, str(tmp), True)
    os.replace(tmp, path)


def write_json_atomic(data: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=".tmp_", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def make_raw_dataset(raw_dir: Path, train: List[Tuple[str, Path, Path]], test: List[Tuple[str, Path, Path]],
                     label_value: int, structure: str) -> Dict[str, sitk.Image]:
    """Write nnU-Net's raw layout; return the test references on the test grids."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (raw_dir / sub).mkdir(parents=True, exist_ok=True)
    for case, image_path, seg_path in train:
        image = read_image(image_path)
        write_atomic(image, raw_dir / "imagesTr" / f"{case}_0000.nii.gz")
        write_atomic(binary_label(sitk.ReadImage(str(seg_path)), label_value, image),
                     raw_dir / "labelsTr" / f"{case}.nii.gz")
    references = {}
    for case, image_path, seg_path in test:
        image = read_image(image_path)
        write_atomic(image, raw_dir / "imagesTs" / f"{case}_0000.nii.gz")
        references[case] = binary_label(sitk.ReadImage(str(seg_path)), label_value, image)
    write_json_atomic({
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, structure: 1},
        "numTraining": len(train),
        "file_ending": ".nii.gz",
        "name": raw_dir.name,
        "description": "TransferSeg side-by-side: TotalSegmentator example CTs, "
                       f"{structure} = label {label_value} of the 'total' table",
    }, raw_dir / "dataset.json")
    return references


# ---------------------------------------------------------------- running nnU-Net

def run_step(name: str, command: List[str], env: Dict[str, str], log_dir: Path) -> StepTiming:
    """Run one command, echo and log its output, time it (wall and children's CPU).

    RUSAGE_CHILDREN covers every descendant that has been waited for, which includes
    nnU-Net's data-augmentation worker processes once they are joined.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    print(f"\n=== {name}: {' '.join(command)}", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            sys.stdout.write(line)
            sys.stdout.flush()
        returncode = proc.wait()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    step = StepTiming(name, command, wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
                      returncode, str(log))
    print(f"=== {name}: rc={returncode} wall={wall:.1f}s cpu={step.cpu_s:.1f}s "
          f"(cpu/wall {step.cpu_s / max(wall, 1e-9):.2f})", flush=True)
    if returncode != 0:
        raise SystemExit(f"{name} failed with exit code {returncode}; see {log}")
    return step


SHORT_TRAINER_TEMPLATE = '''"""Written by TransferSeg's bench/nnunet_side_by_side.py --iterations {iterations}.

nnU-Net's shortest shipped trainer (nnUNetTrainer_1epoch, 250 iterations) does not fit
the side-by-side's time on 2 shared CPU cores; this one changes only the iteration counts.
"""
import torch

from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs import nnUNetTrainer_1epoch


class {name}(nnUNetTrainer_1epoch):
    # the explicit signature matters: nnU-Net records __init__'s parameter names in checkpoints
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = {iterations}
        self.num_val_iterations_per_epoch = {val_iterations}
'''


def install_short_trainer(python: Path, iterations: int, val_iterations: int) -> str:
    """Write a one-epoch trainer with fewer iterations where nnU-Net looks for trainers.

    nnU-Net finds `-tr` classes only inside its own package (nnunetv2/training/nnUNetTrainer),
    so the file goes into the venv's copy of it. Returns the trainer's class name.
    """
    name = f"nnUNetTrainer_1epoch_{iterations}it"
    where = subprocess.run([str(python), "-c", "import nnunetv2.training.nnUNetTrainer as t, os; "
                            "print(os.path.dirname(t.__file__))"], capture_output=True, text=True, check=True)
    target = Path(where.stdout.strip().splitlines()[-1]) / "variants" / "training_length" / f"{name}.py"
    tmp = target.with_name(".tmp_" + target.name)
    tmp.write_text(SHORT_TRAINER_TEMPLATE.format(name=name, iterations=iterations, val_iterations=val_iterations))
    os.replace(tmp, target)
    print(f"wrote {target}", flush=True)
    return name


def venv_versions(python: Path) -> Dict[str, str]:
    code = ("import importlib.metadata as m, json\n"
            "out = {}\n"
            "for p in ('nnunetv2', 'torch', 'torchvision', 'numpy', 'SimpleITK'):\n"
            "    try: out[p] = m.version(p)\n"
            "    except Exception: out[p] = 'missing'\n"
            "print(json.dumps(out))")
    try:
        return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                                         check=True).stdout.strip().splitlines()[-1])
    except (subprocess.CalledProcessError, ValueError, IndexError) as e:
        return {"error": str(e)}


def find_results_fold(results_root: Path, dataset: str, trainer: str, configuration: str) -> Path:
    return results_root / dataset / f"{trainer}__nnUNetPlans__{configuration}" / "fold_all"


def last_pseudo_dice(fold_dir: Path) -> Optional[float]:
    """nnU-Net's own end-of-epoch pseudo-Dice (on its validation split, here the training case)."""
    values = []
    for log in sorted(fold_dir.glob("training_log_*.txt")):
        for m in re.finditer(r"Pseudo dice \[([^\]]*)\]", log.read_text(errors="replace")):
            # newer numpy prints the values as np.float32(0.89): drop the type name's digits
            nums = re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.sub(r"np\.\w+\(", "(", m.group(1)))
            if nums:
                values.append(float(np.mean([float(n) for n in nums])))
    return values[-1] if values else None


def validation_dice(fold_dir: Path) -> Optional[float]:
    summary = fold_dir / "validation" / "summary.json"
    if not summary.exists():
        return None
    data = json.loads(summary.read_text())
    try:
        return float(data["foreground_mean"]["Dice"])
    except (KeyError, TypeError, ValueError):
        return None


def plan_summary(preprocessed: Path, configuration: str) -> Dict[str, object]:
    plans_file = preprocessed / "nnUNetPlans.json"
    if not plans_file.exists():
        return {}
    cfg = json.loads(plans_file.read_text())["configurations"].get(configuration, {})
    return {k: cfg.get(k) for k in ("patch_size", "spacing", "batch_size", "median_image_size_in_voxels")}


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    pred, ref = pred.astype(bool), ref.astype(bool)
    denom = pred.sum() + ref.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(pred, ref).sum() / denom)


# ---------------------------------------------------------------- main

def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    samples = default_sample_dir()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--venv", type=Path, default=NNUNET_HOME / "venv", help="virtualenv holding nnunetv2")
    p.add_argument("--nnunet-home", type=Path, default=NNUNET_HOME,
                   help="nnUNet_raw / nnUNet_preprocessed / nnUNet_results go under here")
    p.add_argument("--dataset-id", type=int, default=501)
    p.add_argument("--dataset-name", default="Liver")
    p.add_argument("--structure", default="liver")
    p.add_argument("--label-value", type=int, default=5, help="value of the structure in the reference labelmaps")
    p.add_argument("--train", nargs=2, action="append", metavar=("IMAGE", "LABELMAP"),
                   help="training case (repeatable); default: example_ct_sm + example_seg")
    p.add_argument("--test", nargs=2, action="append", metavar=("IMAGE", "LABELMAP"),
                   help="held-out case (repeatable); default: example_ct_dicom + example_seg_dicom")
    p.add_argument("--trainer", default="nnUNetTrainer_1epoch")
    p.add_argument("--iterations", type=int, default=0,
                   help="if > 0: generate and use nnUNetTrainer_1epoch_<N>it (one epoch of N training "
                        "iterations) instead of --trainer, for when 250 iterations do not fit the time")
    p.add_argument("--val-iterations", type=int, default=10,
                   help="validation iterations of that generated trainer (nnU-Net's default is 50)")
    p.add_argument("--configuration", default="3d_fullres")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.add_argument("--nice", type=int, default=10, help="niceness for the nnU-Net commands (0 = none)")
    p.add_argument("--keep", action="store_true",
                   help="keep earlier preprocessed data and results of this dataset (default: start from scratch)")
    p.add_argument("--out-json", type=Path, default=NNUNET_HOME / "side_by_side.json")
    args = p.parse_args(argv)
    if not args.train:
        args.train = [[str(samples / "example_ct_sm.nii.gz"), str(samples / "example_seg.nii.gz")]]
    if not args.test:
        args.test = [[str(samples / "example_ct_dicom"), str(samples / "example_seg_dicom.nii.gz")]]
    return args


def case_name(path: str, prefix: str, index: int) -> str:
    stem = Path(path).name.split(".")[0]
    return f"{prefix}{index:02d}_" + re.sub(r"[^A-Za-z0-9]+", "", stem)


def main(argv: Optional[List[str]] = None) -> SideBySideResult:
    args = parse_args(argv)
    bin_dir = args.venv / "bin"
    if not (bin_dir / "nnUNetv2_train").exists():
        raise SystemExit(f"{bin_dir}/nnUNetv2_train not found: create the nnU-Net venv first "
                         "(see docs/nnunet.md) or pass --venv")
    if args.iterations > 0:
        args.trainer = install_short_trainer(bin_dir / "python", args.iterations, args.val_iterations)
    dataset = f"Dataset{args.dataset_id:03d}_{args.dataset_name}"
    home = args.nnunet_home
    roots = {"nnUNet_raw": home / "raw", "nnUNet_preprocessed": home / "preprocessed",
             "nnUNet_results": home / "results"}
    if not args.keep:
        for root in roots.values():
            shutil.rmtree(root / dataset, ignore_errors=True)
    env = dict(os.environ)
    env.update({k: str(v) for k, v in roots.items()})
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    for var in ("PYTHONPATH", "PYTHONHOME"):
        env.pop(var, None)
    env["VIRTUAL_ENV"] = str(args.venv)

    train = [(case_name(img, "tr", i), Path(img), Path(seg)) for i, (img, seg) in enumerate(args.train)]
    test = [(case_name(img, "ts", i), Path(img), Path(seg)) for i, (img, seg) in enumerate(args.test)]
    raw_dir = roots["nnUNet_raw"] / dataset
    print(f"writing {raw_dir} ({len(train)} training, {len(test)} held-out case(s))", flush=True)
    references = make_raw_dataset(raw_dir, train, test, args.label_value, args.structure)

    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    logs = home / "logs" / dataset
    pred_dir = home / "pred" / dataset / args.trainer
    shutil.rmtree(pred_dir, ignore_errors=True)
    did = str(args.dataset_id)
    steps = [
        run_step("plan_and_preprocess", nice + [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", did,
                                                "-c", args.configuration, "-np", "1"], env, logs),
        run_step("train", nice + [str(bin_dir / "nnUNetv2_train"), did, args.configuration, "all",
                                  "-tr", args.trainer, "-device", args.device], env, logs),
        run_step("predict", nice + [str(bin_dir / "nnUNetv2_predict"), "-i", str(raw_dir / "imagesTs"),
                                    "-o", str(pred_dir), "-d", did, "-c", args.configuration, "-f", "all",
                                    "-tr", args.trainer, "-device", args.device], env, logs),
    ]

    scores, ref_voxels, pred_voxels = {}, {}, {}
    for case, _, _ in test:
        ref = references[case]
        pred = sitk.ReadImage(str(pred_dir / f"{case}.nii.gz"))
        if pred.GetSize() != ref.GetSize():
            raise SystemExit(f"{pred_dir}/{case}.nii.gz has size {pred.GetSize()}, the test image {ref.GetSize()}: "
                             "nnU-Net should return predictions on the input grid")
        p = sitk.GetArrayFromImage(pred) == 1
        r = sitk.GetArrayFromImage(ref) == 1
        scores[case], ref_voxels[case], pred_voxels[case] = dice(p, r), int(r.sum()), int(p.sum())

    fold_dir = find_results_fold(roots["nnUNet_results"], dataset, args.trainer, args.configuration)
    result = SideBySideResult(
        dataset=dataset, trainer=args.trainer, configuration=args.configuration, device=args.device,
        train_cases=[f"{c}: {i} + {s}" for c, i, s in train], test_cases=[f"{c}: {i} + {s}" for c, i, s in test],
        steps=steps, held_out_dice=scores, reference_voxels=ref_voxels, predicted_voxels=pred_voxels,
        training_case_dice_nnunet_validation=validation_dice(fold_dir), last_pseudo_dice=last_pseudo_dice(fold_dir),
        plans=plan_summary(roots["nnUNet_preprocessed"] / dataset, args.configuration),
        versions=venv_versions(bin_dir / "python"),
        host={"platform": platform.platform(), "cpu_count": os.cpu_count(), "nice": args.nice,
              "loadavg_at_end": list(os.getloadavg())},
    )
    payload = dataclasses.asdict(result)
    for step, obj in zip(payload["steps"], steps):
        step["cpu_s"] = obj.cpu_s
    write_json_atomic(payload, args.out_json)

    print("\n==== nnU-Net v2 side-by-side summary ====")
    print(f"dataset {dataset}, trainer {args.trainer}, {args.configuration}, device {args.device}, "
          f"nnunetv2 {result.versions.get('nnunetv2')}, torch {result.versions.get('torch')}")
    print(f"plans: {result.plans}")
    for s in steps:
        print(f"  {s.name:<20} wall {s.wall_s:8.1f} s   cpu {s.cpu_s:8.1f} s   cpu/wall {s.cpu_s / max(s.wall_s, 1e-9):.2f}")
    print(f"  {'total':<20} wall {sum(s.wall_s for s in steps):8.1f} s")
    for case, d in scores.items():
        print(f"  held-out {args.structure} Dice [{case}]: {d:.4f} "
              f"(reference {ref_voxels[case]} voxels, predicted {pred_voxels[case]})")
    print(f"  nnU-Net's own validation Dice on the training case (fold all, not held out): "
          f"{result.training_case_dice_nnunet_validation}")
    print(f"  last pseudo-Dice logged: {result.last_pseudo_dice}")
    print(f"wrote {args.out_json}")
    return result


if __name__ == "__main__":
    main()
