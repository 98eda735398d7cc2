"""Held-out per-class Dice of the shipped default base model (the figures in its model card).

The held-out patient is the TotalSegmentator DICOM example CT, never used in pretraining.
Its reference (TotalSegmentator's own prediction) is written as a named .seg.nrrd holding
the default model's classes present in it; then the two CLI commands run:

    transferseg predict --model Resources/Models/default --image <DICOM folder> --output OUT/default_pred.seg.nrrd
    transferseg evaluate --prediction OUT/default_pred.seg.nrrd --reference OUT/reference.seg.nrrd --json

Usage: python bench/evaluate_default_model.py [--output DIR] [--device cpu] [--model DIR]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from TransferSegLib.models.base_model import default_model_dir
from TransferSegLib.data.cases import load_case
from TransferSegLib.cli import main as cli
from TransferSegLib.data.labelmaps import write_labelmap
from TransferSegLib.models.model_dir import load_model
from TransferSegLib.data.sample_data import sample_cases


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--output", default="default-model-eval")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default=None, help="model folder to evaluate instead of the shipped default "
                                                  "(a candidate before it replaces Resources/Models/default)")
    args = p.parse_args()
    model = Path(args.model) if args.model else default_model_dir()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    _, info = load_model(model)
    case = sample_cases()["ts_dicom"]
    loaded = load_case(case, info.labels)
    present = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(loaded.label)) if v]
    names = {v: info.labels[v] for v in present}
    write_labelmap(loaded.label, str(out / "reference.seg.nrrd"), names=names)
    cli(["predict", "--model", str(model), "--image", case.image,
         "--output", str(out / "default_pred.seg.nrrd"), "--device", args.device])
    cli(["evaluate", "--prediction", str(out / "default_pred.seg.nrrd"), "--reference", str(out / "reference.seg.nrrd")])
    cli(["evaluate", "--prediction", str(out / "default_pred.seg.nrrd"), "--reference", str(out / "reference.seg.nrrd"), "--json"])


if __name__ == "__main__":
    main()
