"""Inference time and peak memory of ``transferseg predict``, beside ``nnUNetv2_predict`` on the same network.

Usage:
  python bench/bench_infer.py [--image CT.nii.gz | --slices 300] [--model DIR] [--device cpu|cuda]
  python bench/bench_infer.py --nnunet-model RESULTS/DatasetXXX/Trainer__Plans__3d_fullres [--fold all]
         [--nnunet-predict nnUNetv2_predict_from_modelfolder]

Without --image it stacks the shipped 512×512×20 DICOM CT (real intensities,
0.98×0.98 mm in plane) to --slices slices at 1 mm: the size of a clinical scan.
Each prediction runs as its own process, timed from start to the written file;
peak resident memory is that process's own (``wait4``). With --nnunet-model, the
same nnU-Net folder is predicted by ``transferseg predict --model FOLDER`` and by
nnU-Net's own ``nnUNetv2_predict_from_modelfolder`` (no test-time mirroring in
either), and the time ratio TransferSeg / nnU-Net is printed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parents[1]
DICOM = ROOT / "Resources" / "SampleData" / "TotalSegmentator" / "example_ct_dicom"


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


def timed(command: List[str], env=None) -> Tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (GB) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
    if child.returncode != 0:
        sys.exit(f"failed ({child.returncode}): {' '.join(command)}\n{child.stderr.read().decode()[-3000:]}")
    peak = usage.ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)
    return wall, usage.ru_utime + usage.ru_stime, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image", help="CT to predict (default: the shipped DICOM stacked to --slices)")
    p.add_argument("--slices", type=int, default=300, help="slices of the stacked CT (default 300)")
    p.add_argument("--model", default=str(ROOT / "Resources" / "Models" / "default"),
                   help="TransferSeg model folder (default: the shipped default model, 29 classes)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--nnunet-model", help="an nnU-Net v2 trained model folder: time both tools on it")
    p.add_argument("--fold", default="all", help="nnU-Net fold to use (default all)")
    p.add_argument("--nnunet-predict", default="nnUNetv2_predict_from_modelfolder",
                   help="nnU-Net's predict-from-folder command (default: the one on PATH)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="transferseg-bench-"))
    try:
        image = Path(args.image) if args.image else clinical_ct(work / "ct.nii.gz", args.slices)
        ts = [sys.executable, "-m", "TransferSegLib", "predict", "--image", str(image), "--device", args.device]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        wall, cpu, rss = timed(ts + ["--model", args.model, "--output", str(work / "ts.nii.gz")], env)
        print(f"transferseg predict --model {args.model}: image={image.name} device={args.device} "
              f"wall_s={wall:.1f} cpu_s={cpu:.1f} peak_rss_gb={rss:.2f}")
        if not args.nnunet_model:
            return
        folder = Path(args.nnunet_model)
        ts_wall, ts_cpu, ts_rss = timed(ts + ["--model", str(folder), "--output", str(work / "ts_nnunet.nii.gz")], env)
        inputs, outputs = work / "nnunet_in", work / "nnunet_out"
        inputs.mkdir()
        shutil.copy(image, inputs / "case_0000.nii.gz")
        if shutil.which(args.nnunet_predict) is None and not Path(args.nnunet_predict).is_file():
            sys.exit(f"'{args.nnunet_predict}' not found: install nnunetv2 or give --nnunet-predict PATH")
        nn_cmd = [args.nnunet_predict, "-i", str(inputs), "-o", str(outputs), "-m", str(folder), "-f", args.fold,
                  "--disable_tta", "-device", "cuda" if args.device.startswith("cuda") else "cpu"]
        nn_env = dict(os.environ, nnUNet_raw=str(work), nnUNet_preprocessed=str(work), nnUNet_results=str(work))
        nn_wall, nn_cpu, nn_rss = timed(nn_cmd, nn_env)
        print(f"transferseg predict --model {folder.name}: wall_s={ts_wall:.1f} cpu_s={ts_cpu:.1f} peak_rss_gb={ts_rss:.2f}")
        print(f"nnUNetv2_predict_from_modelfolder -m {folder.name}: wall_s={nn_wall:.1f} cpu_s={nn_cpu:.1f} "
              f"peak_rss_gb={nn_rss:.2f}")
        print(f"time ratio transferseg/nnunet: wall={ts_wall / nn_wall:.2f} cpu={ts_cpu / nn_cpu:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
