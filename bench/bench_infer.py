"""Inference speed: seconds per volume for a synthetic CT of a given size and spacing.

Usage: python bench/bench_infer.py [--device cpu|cuda] [--size 512 512 300] [--spacing 0.8 0.8 1.5]
       [--model DIR] [--tta] [--overlap 0.5]
Without --model it uses the shipped default model. The whole path is timed:
preprocessing (resampling), sliding window, and restoring onto the input grid.
"""

import argparse
import resource
import time

import numpy as np
import SimpleITK as sitk
import torch

from TransferSegLib.models.base_model import default_model_dir
from TransferSegLib.inference.infer import InferenceOptions, predict_image
from TransferSegLib.models.model_dir import load_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--size", type=int, nargs=3, default=[256, 256, 100])
    p.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 1.5])
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--tta", action="store_true")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    array = rng.normal(0, 200, args.size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(args.spacing)
    model, info = load_model(args.model, "cpu")
    options = InferenceOptions(overlap=args.overlap, tta=args.tta)
    times = []
    if args.device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        predict_image(model, info, image, args.device, options)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"device={args.device} size={tuple(args.size)} spacing={tuple(args.spacing)} model_spacing={info.recipe.spacing} "
          f"patch={info.patch_size} tta={args.tta} overlap={args.overlap} s/volume(first)={times[0]:.2f} "
          f"s/volume(best)={min(times):.2f} peak_rss_gb={rss:.2f}" + (f" peak_gpu_gb={gpu:.2f}" if gpu is not None else ""))


if __name__ == "__main__":
    main()
