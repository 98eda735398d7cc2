"""Inference time and peak memory of ``transferseg predict``, beside nnU-Net's own predictor on the same network.

Usage:
  python bench/bench_infer.py [--image CT.nii.gz | --slices 300] [--model DIR] [--device cpu|cuda]
  python bench/bench_infer.py --nnunet-model RESULTS/DatasetXXX/Trainer__Plans__3d_fullres
         --nnunet-python /work/nnunet-venv/bin/python [--threads 2] [--tta] [--skip-model]

Without --image it stacks the shipped 512×512×20 DICOM CT (real intensities,
0.98×0.98 mm in plane) to --slices slices at 1 mm: the size of a clinical scan.
Each prediction runs as its own process, timed from start to the written file.
Peak memory is given twice: the largest single process (``wait4``'s ``ru_maxrss``)
and the whole process tree (summed proportional set sizes) sampled every 0.2 s (nnU-Net preprocesses and exports
in worker processes). With --nnunet-model, the same nnU-Net folder is predicted by
``transferseg predict --model FOLDER`` and by nnU-Net's
``predict_entry_point_modelfolder`` (``nnUNetv2_predict_from_modelfolder``, one
preprocessing and one export process), both on --threads torch threads, TTA off
(and with --tta a second pair with mirroring on both); the time ratio TransferSeg /
nnU-Net and the per-class Dice between the two labelmaps are printed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
DICOM = ROOT / "Resources" / "SampleData" / "TotalSegmentator" / "example_ct_dicom"
# nnU-Net sets torch's threads to multiprocessing.cpu_count(); this pins them to --threads instead.
NNUNET_LAUNCHER = (
    "import multiprocessing, sys; n = int(sys.argv.pop(1)); multiprocessing.cpu_count = lambda: n; "
    "from nnunetv2.inference.predict_from_raw_data import predict_entry_point_modelfolder as main; "
    "sys.argv[0] = 'nnUNetv2_predict_from_modelfolder'; main()"
)


def clinical_ct(out: Path, slices: int) -> Path:
    """The shipped DICOM series' slices repeated to ``slices`` slices at 1 mm (same plane, origin, direction)."""
    import numpy as np
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(DICOM)))
    series = reader.Execute()
    stack = sitk.GetArrayFromImage(series)
    stack = np.tile(stack, (-(-slices // stack.shape[0]), 1, 1))[:slices]
    image = sitk.GetImageFromArray(stack)
    image.SetSpacing((series.GetSpacing()[0], series.GetSpacing()[1], 1.0))
    image.SetOrigin(series.GetOrigin())
    image.SetDirection(series.GetDirection())
    sitk.WriteImage(image, str(out))
    return out


def _tree_rss_bytes(pid: int) -> int:
    """Memory of ``pid`` and all its descendants (Linux /proc; 0 elsewhere), as the sum of their
    proportional set sizes: pages a forked worker shares with its parent are counted once."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError, StopIteration):
            continue
    return total


def timed(command: List[str], env: Optional[Dict[str, str]] = None) -> Tuple[float, float, float, float]:
    """Wall seconds, CPU seconds (user + system, the tree), peak RSS of its largest process and of
    the whole tree (GB) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tree_peak = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        tree_peak = max(tree_peak, _tree_rss_bytes(child.pid))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
    if code != 0:
        sys.exit(f"failed ({code}): {' '.join(command)}\n{child.stderr.read().decode()[-3000:]}")
    largest = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return wall, usage.ru_utime + usage.ru_stime, largest / 2**30, max(tree_peak, largest) / 2**30


def dice_line(ours: Path, theirs: Path) -> str:
    """Per-class Dice between two labelmaps on one grid, and the share of voxels that agree."""
    import numpy as np
    import SimpleITK as sitk

    sys.path.insert(0, str(ROOT))
    from TransferSegLib.evaluation.metrics import dice_per_class

    a = sitk.GetArrayFromImage(sitk.ReadImage(str(ours)))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(theirs)))
    classes = int(max(a.max(), b.max())) + 1
    scores = dice_per_class(a, b, classes)
    parts = [f"{c}:{float(scores[c]):.4f}" for c in range(1, classes) if (a == c).any() or (b == c).any()]
    return f"dice per class {' '.join(parts)}; voxels agreeing {float((a == b).mean()):.6f}"


def _line(name: str, figures: Tuple[float, float, float, float]) -> str:
    wall, cpu, largest, tree = figures
    return f"{name}: wall_s={wall:.1f} cpu_s={cpu:.1f} peak_rss_gb={largest:.2f} tree_peak_rss_gb={tree:.2f}"


def side_by_side(args, image: Path, work: Path, env: Dict[str, str], tta: bool) -> None:
    """One row: the nnU-Net folder through TransferSeg and through nnU-Net's predictor."""
    folder = Path(args.nnunet_model).resolve()
    tag = "tta" if tta else "notta"
    ours = work / f"ts_{tag}.nii.gz"
    ts_cmd = [sys.executable, "-m", "TransferSegLib", "predict", "--model", str(folder), "--image", str(image),
              "--output", str(ours), "--device", args.device, "--no-largest-component"] + (["--tta"] if tta else [])
    ts = timed(ts_cmd, env)
    inputs, outputs = work / f"nnunet_in_{tag}", work / f"nnunet_out_{tag}"
    inputs.mkdir()
    os.symlink(image, inputs / "case_0000.nii.gz")
    nn_cmd = [args.nnunet_python, "-c", NNUNET_LAUNCHER, str(args.threads), "-i", str(inputs), "-o", str(outputs),
              "-m", str(folder), "-f", args.fold, "-npp", "1", "-nps", "1", "--disable_progress_bar",
              "-device", "cuda" if args.device.startswith("cuda") else "cpu"] + ([] if tta else ["--disable_tta"])
    nn_env = dict(env, nnUNet_raw=str(work), nnUNet_preprocessed=str(work), nnUNet_results=str(work))
    nn = timed(nn_cmd, nn_env)
    print(f"[{'TTA on' if tta else 'TTA off'}] {image.name}, {args.threads} thread(s), device {args.device}")
    print("  " + _line(f"transferseg predict --model {folder.name}", ts))
    print("  " + _line(f"nnUNetv2_predict_from_modelfolder -m {folder.name}", nn))
    print(f"  time ratio transferseg/nnunet: wall={ts[0] / nn[0]:.2f} cpu={ts[1] / nn[1]:.2f}")
    print("  " + dice_line(ours, outputs / "case.nii.gz"), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image", help="CT to predict (default: the shipped DICOM stacked to --slices)")
    p.add_argument("--slices", type=int, default=300, help="slices of the stacked CT (default 300)")
    p.add_argument("--model", default=str(ROOT / "Resources" / "Models" / "default"),
                   help="TransferSeg model folder (default: the shipped default model, 29 classes)")
    p.add_argument("--skip-model", action="store_true", help="do not time --model (only the nnU-Net side by side)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of every prediction (default 2)")
    p.add_argument("--nnunet-model", help="an nnU-Net v2 trained model folder: time both tools on it")
    p.add_argument("--fold", default="all", help="nnU-Net fold to use (default all)")
    p.add_argument("--nnunet-python", default="python3",
                   help="Python of an environment with nnunetv2 (default: python3 on PATH)")
    p.add_argument("--tta", action="store_true", help="also a second side-by-side with mirroring on both")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="transferseg-bench-"))
    try:
        image = Path(args.image).resolve() if args.image else clinical_ct(work / "ct.nii.gz", args.slices)
        threads = str(args.threads)
        env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if not args.skip_model:
            ts = [sys.executable, "-m", "TransferSegLib", "predict", "--image", str(image), "--device", args.device,
                  "--model", args.model, "--output", str(work / "ts.nii.gz")]
            print(_line(f"transferseg predict --model {args.model} ({image.name}, device {args.device})",
                        timed(ts, env)), flush=True)
        if args.nnunet_model:
            for tta in ([False, True] if args.tta else [False]):
                side_by_side(args, image, work, env, tta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
