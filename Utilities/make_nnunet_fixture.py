"""Regenerate the tiny nnU-Net v2 test model in Testing/data/nnunet/ with nnunetv2 itself.

Run it with the Python of an environment that has ``nnunetv2`` installed (not TransferSeg's own test
environment; see docs/models.md), from the repository root::

    /work/nnunet-venv/bin/python Utilities/make_nnunet_fixture.py [--epochs 1] [--seed 0] [--threads 1] \
        [--work /tmp/nnunet-fixture]

What it does, every step through nnU-Net's own command-line tools:

1. writes an nnU-Net raw dataset ``Dataset990_TransferSegTiny`` from the shipped sample CT
   ``Resources/SampleData/TotalSegmentator/example_ct_sm.nii.gz`` and four classes of its labelmap
   (liver, spleen, kidney_left, kidney_right, renumbered 1..4);
2. ``nnUNetv2_extract_fingerprint`` and ``nnUNetv2_plan_experiment`` (the default planner);
3. shrinks the planner's 3d_fullres configuration so the model is small and trains in minutes on a CPU
   (4 stages of 8-32 features, one decoder convolution per stage, a 32x64x64 patch, batch 2) and saves it as
   the plans ``nnUNetPlansTiny`` (everything else, normalization and spacing included, is the planner's);
4. ``nnUNetv2_preprocess`` and ``nnUNetv2_train ... all -tr nnUNetTrainer_<N>epochs -device cpu``
   (a stock trainer class, so ``nnUNetv2_predict`` finds it; 250 iterations per epoch, about 3 minutes an
   epoch on one free CPU core). Training and prediction run nnU-Net's own entry points with ``--threads``
   torch threads (nnU-Net's CPU default is every core), ``random``/numpy/torch seeded with ``--seed`` and
   ``nnUNet_n_proc_DA=0`` (no augmentation workers) unless the environment sets it. ``--epochs 0`` trains
   nothing: nnU-Net's own ``nnUNetTrainer`` builds and initializes the network and writes its checkpoint
   (``save_checkpoint``), a real nnU-Net checkpoint with untrained weights;
5. copies the trained folder (plans.json, dataset.json, dataset_fingerprint.json,
   fold_all/checkpoint_final.pth; logs, plots and validation left out) into Testing/data/nnunet/;
6. predicts the two sample CTs with ``nnUNetv2_predict_from_modelfolder -f all --disable_tta -device cpu``
   and stores those labelmaps as the reference the test suite compares TransferSeg's prediction with.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "Resources" / "SampleData" / "TotalSegmentator"
DEST = ROOT / "Testing" / "data" / "nnunet"
DATASET = "Dataset990_TransferSegTiny"
PLANS = "nnUNetPlansTiny"
LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney_left": 3, "kidney_right": 4}
SAMPLE_VALUES = {"liver": 5, "spleen": 1, "kidney_left": 3, "kidney_right": 2}  # TotalSegmentator's "total" values
TINY_ARCH = {
    "n_stages": 4,
    "features_per_stage": [8, 16, 32, 32],
    "kernel_sizes": [[3, 3, 3]] * 4,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [2, 2, 2, 2],
    "n_conv_per_stage_decoder": [1, 1, 1],
}
TINY_PATCH = [32, 64, 64]


def run(command, env) -> None:
    print("+", " ".join(command), flush=True)
    start = time.monotonic()
    subprocess.run(["nice", "-n", "10"] + command, env=env, check=True)
    print(f"  ({time.monotonic() - start:.0f} s)", flush=True)


def tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


ENTRY_POINTS = {
    "nnUNetv2_train": "nnunetv2.run.run_training:run_training_entry",
    "nnUNetv2_predict_from_modelfolder": "nnunetv2.inference.predict_from_raw_data:predict_entry_point_modelfolder",
}


def entry(name: str, threads: int, seed: int) -> list:
    """Run nnU-Net's command ``name`` in a fresh Python, as its console script does, with two changes.

    On ``-device cpu`` nnU-Net's train and predict entry points call ``torch.set_num_threads(cpu_count())``,
    which takes every core of a shared machine; here ``multiprocessing.cpu_count`` reports ``threads`` to them.
    ``random``, numpy and torch are seeded with ``seed`` first, so that (with ``nnUNet_n_proc_DA=0``: sampling
    and augmentation in the main process) a CPU training run starts from the same weights and draws the same
    patches; nnU-Net has no seed option of its own.
    """
    module, function = ENTRY_POINTS[name].split(":")
    code = ("import multiprocessing, random, sys; import numpy, torch; "
            f"multiprocessing.cpu_count = lambda: {threads}; "
            f"random.seed({seed}); numpy.random.seed({seed}); torch.manual_seed({seed}); "
            f"sys.argv[0] = {name!r}; from {module} import {function}; {function}()")
    return [sys.executable, "-c", code]


def write_raw(raw: Path) -> None:
    folder = raw / DATASET
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.ReadImage(str(SAMPLES / "example_ct_sm.nii.gz")), str(folder / "imagesTr" / "ct_sm_0000.nii.gz"))
    seg = sitk.ReadImage(str(SAMPLES / "example_seg.nii.gz"))
    values = sitk.GetArrayFromImage(seg)
    out = np.zeros(values.shape, np.uint8)
    for name, value in SAMPLE_VALUES.items():
        out[values == value] = LABELS[name]
    label = sitk.GetImageFromArray(out)
    label.CopyInformation(seg)
    sitk.WriteImage(label, str(folder / "labelsTr" / "ct_sm.nii.gz"))
    dataset = {"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": 1, "file_ending": ".nii.gz",
               "name": "TransferSegTiny",
               "description": "TransferSeg's nnU-Net test model: 4 organs of one TotalSegmentator sample CT",
               "licence": "Apache-2.0 (TotalSegmentator sample data)"}
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")


def shrink_plans(preprocessed: Path) -> None:
    folder = preprocessed / DATASET
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["plans_name"] = PLANS
    config = plans["configurations"]["3d_fullres"]
    config["data_identifier"] = f"{PLANS}_3d_fullres"
    config["patch_size"] = TINY_PATCH
    config["batch_size"] = 2
    config["architecture"]["arch_kwargs"].update(TINY_ARCH)
    plans["configurations"] = {"3d_fullres": config}
    (folder / f"{PLANS}.json").write_text(json.dumps(plans, indent=4) + "\n")


def initialized_checkpoint(work: Path, trained: Path, env, seed: int) -> None:
    """nnU-Net's trainer builds and initializes the network (seeded) and saves it as nnUNetv2_train would."""
    os.environ.update(env)
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    folder = work / "preprocessed" / DATASET
    plans = json.loads((folder / f"{PLANS}.json").read_text())
    dataset = json.loads((folder / "dataset.json").read_text())
    torch.manual_seed(seed)
    trainer = nnUNetTrainer(dict(plans, continue_training=False), "3d_fullres", "all", dataset, device=torch.device("cpu"))
    trainer.initialize()
    (trained / "fold_all").mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(str(trained / "fold_all" / "checkpoint_final.pth"))
    for name, data in (("plans.json", plans), ("dataset.json", dataset)):
        (trained / name).write_text(json.dumps(data, indent=4) + "\n")
    shutil.copy2(folder / "dataset_fingerprint.json", trained / "dataset_fingerprint.json")


def dicom_to_nifti(out: Path) -> Path:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(SAMPLES / "example_ct_dicom")))
    sitk.WriteImage(reader.Execute(), str(out))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/nnunet-fixture", help="scratch folder (nnUNet_raw/preprocessed/results)")
    parser.add_argument("--epochs", type=int, default=1, choices=(0, 1, 5, 10, 20),
                        help="stock trainer nnUNetTrainer_<N>epochs (0: nnUNetTrainer's initialized, untrained network)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random, numpy and torch before training (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for nnU-Net's training and prediction (default 1; nnU-Net's own: all cores)")
    parser.add_argument("--references-only", action="store_true",
                        help="keep the shipped model; only predict the reference labelmaps again with nnU-Net")
    args = parser.parse_args()
    work = Path(args.work)
    threads = str(args.threads)
    env = dict(os.environ, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"), nnUNet_n_proc_DA="1",  # the planner needs >= 1
               nnUNet_def_n_proc=os.environ.get("nnUNet_def_n_proc", "1"),
               OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    if args.references_only:
        shipped = sorted((DEST / DATASET).glob(f"*__{PLANS}__3d_fullres"))
        if len(shipped) != 1:
            raise SystemExit(f"expected one model folder under {DEST / DATASET}, found {len(shipped)}")
        predict_references(work, shipped[0], env, args)
        return 0
    trainer = "nnUNetTrainer" if args.epochs == 0 else f"nnUNetTrainer_{args.epochs}epoch" + ("s" if args.epochs > 1 else "")
    write_raw(work / "raw")
    run([tool("nnUNetv2_extract_fingerprint"), "-d", "990", "-np", "1"], env)
    run([tool("nnUNetv2_plan_experiment"), "-d", "990"], env)
    shrink_plans(work / "preprocessed")
    run([tool("nnUNetv2_preprocess"), "-d", "990", "-plans_name", PLANS, "-c", "3d_fullres", "-np", "1"], env)
    trained = work / "results" / DATASET / f"{trainer}__{PLANS}__3d_fullres"
    if args.epochs:
        run(entry("nnUNetv2_train", args.threads, args.seed)
            + ["990", "3d_fullres", "all", "-p", PLANS, "-tr", trainer, "-device", "cpu"],
            # 0: nnU-Net samples and augments in the training process (no workers; the planner needs >= 1)
            dict(env, nnUNet_n_proc_DA=os.environ.get("nnUNet_n_proc_DA", "0")))
    else:
        initialized_checkpoint(work, trained, env, args.seed)
    dest = DEST / DATASET / trained.name
    if (DEST / DATASET).exists():
        shutil.rmtree(DEST / DATASET)
    (dest / "fold_all").mkdir(parents=True)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        shutil.copy2(trained / name, dest / name)
    shutil.copy2(trained / "fold_all" / "checkpoint_final.pth", dest / "fold_all" / "checkpoint_final.pth")
    predict_references(work, dest, env, args)
    return 0


def predict_references(work: Path, dest: Path, env, args) -> None:
    """nnU-Net's own predictions of the sample CTs with the shipped model: TTA off on both CTs
    (``*_nnunet.nii.gz``) and, for the small CT, with nnU-Net's default mirroring (``*_nnunet_tta.nii.gz``)."""
    inputs = work / "predict_in"
    outputs = work / "predict_out"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    shutil.copy2(SAMPLES / "example_ct_sm.nii.gz", inputs / "ct_sm_0000.nii.gz")
    dicom_to_nifti(inputs / "ct_dicom_0000.nii.gz")
    run(entry("nnUNetv2_predict_from_modelfolder", args.threads, args.seed)
        + ["-i", str(inputs), "-o", str(outputs), "-m", str(dest), "-f", "all", "-chk", "checkpoint_final.pth",
           "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], env)
    reference = DEST / "reference"
    reference.mkdir(parents=True, exist_ok=True)
    for case in ("ct_sm", "ct_dicom"):
        shutil.copy2(outputs / f"{case}.nii.gz", reference / f"{case}_nnunet.nii.gz")
    small, mirrored = work / "predict_in_tta", work / "predict_out_tta"
    shutil.rmtree(small, ignore_errors=True)
    small.mkdir(parents=True)
    shutil.copy2(SAMPLES / "example_ct_sm.nii.gz", small / "ct_sm_0000.nii.gz")
    run(entry("nnUNetv2_predict_from_modelfolder", args.threads, args.seed)
        + ["-i", str(small), "-o", str(mirrored), "-m", str(dest), "-f", "all", "-chk", "checkpoint_final.pth",
           "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    shutil.copy2(mirrored / "ct_sm.nii.gz", reference / "ct_sm_nnunet_tta.nii.gz")
    print(f"wrote {dest} and {reference}")


if __name__ == "__main__":
    sys.exit(main())
