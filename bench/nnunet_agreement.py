"""TransferSeg vs nnU-Net's own predictor on the same nnU-Net model: per-class Dice between the two.

nnunetv2 cannot be installed beside TransferSeg's test environment (it imports torchvision), so this runs
nnU-Net's command-line predictor from its own environment (``--nnunet-bin``, the folder holding
``nnUNetv2_predict_from_modelfolder``) and TransferSeg in this Python, on the shipped sample CTs:

    python bench/nnunet_agreement.py --nnunet-bin /path/to/nnunet-venv/bin [--model FOLDER] [--export]

1. zero-shot: ``nnUNetv2_predict_from_modelfolder -f all --disable_tta -device cpu`` vs ``transferseg predict``
   on the nnU-Net model folder (default: the test fixture in Testing/data/nnunet);
2. ``--export``: fine-tune that model for a few iterations on the small sample CT (liver, spleen and a class
   the base does not know, stomach), write it back with ``transferseg models export-nnunet``, and compare
   nnU-Net's prediction of the exported folder with ``transferseg predict`` of the fine-tuned model.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from TransferSegLib.data.images import read_image  # noqa: E402
from TransferSegLib.data.sample_data import sample_cases  # noqa: E402
from TransferSegLib.evaluation.metrics import dice_per_class  # noqa: E402
from TransferSegLib.inference.infer import predict_file  # noqa: E402
from TransferSegLib.models.nnunet import read_nnunet_folder  # noqa: E402

FIXTURE = next((ROOT / "Testing" / "data" / "nnunet" / "Dataset990_TransferSegTiny").iterdir())


def nnunet_predict(bin_dir: Path, model: Path, images: Dict[str, sitk.Image], work: Path) -> Dict[str, np.ndarray]:
    inputs, outputs = work / "in", work / "out"
    inputs.mkdir(parents=True)
    for case, image in images.items():
        sitk.WriteImage(image, str(inputs / f"{case}_0000.nii.gz"))
    command = [str(bin_dir / "nnUNetv2_predict_from_modelfolder"), "-i", str(inputs), "-o", str(outputs),
               "-m", str(model), "-f", "all", "-chk", "checkpoint_final.pth", "-device", "cpu", "--disable_tta"]
    start = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"nnU-Net failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(f"nnUNetv2_predict_from_modelfolder: {time.monotonic() - start:.1f} s for {len(images)} image(s)")
    return {case: sitk.GetArrayFromImage(sitk.ReadImage(str(outputs / f"{case}.nii.gz"))) for case in images}


def transferseg_predict(model: Path, images: Dict[str, str], work: Path) -> Dict[str, np.ndarray]:
    result = {}
    start = time.monotonic()
    for case, path in images.items():
        out = work / f"{case}_transferseg.nii.gz"
        predict_file(model, Path(path), out, device="cpu", largest_component=False)  # nnU-Net has no clean-up
        result[case] = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    print(f"transferseg predict: {time.monotonic() - start:.1f} s for {len(images)} image(s)")
    return result


def report(title: str, labels: List[str], ours: Dict[str, np.ndarray], theirs: Dict[str, np.ndarray]) -> float:
    print(f"\n{title}")
    print(f"{'case':<10} {'class':<14} {'voxels nnU-Net':>14} {'voxels ours':>12} {'Dice':>7}")
    worst = 1.0
    for case in ours:
        scores = dice_per_class(ours[case], theirs[case], len(labels))
        for c in range(1, len(labels)):
            n_ref, n_ours = int((theirs[case] == c).sum()), int((ours[case] == c).sum())
            if n_ref == 0 and n_ours == 0:
                continue
            worst = min(worst, float(scores[c]))
            print(f"{case:<10} {labels[c]:<14} {n_ref:>14} {n_ours:>12} {scores[c]:>7.4f}")
        print(f"{case:<10} {'(all voxels)':<14} {'':>14} {'':>12} {float((ours[case] == theirs[case]).mean()):>7.4f} agree")
    print(f"lowest per-class Dice: {worst:.4f}")
    return worst


def _images() -> Dict[str, str]:
    cases = sample_cases()
    return {"ct_sm": cases["ts_ct"].image, "ct_dicom": cases["ts_dicom"].image}


def finetuned_model(base: Path, output: Path, iterations: int) -> Path:
    from TransferSegLib.training.finetune import FinetuneSpec, run_finetune
    from TransferSegLib.specs import TrainConfig

    spec = FinetuneSpec(base=str(base), cases=[sample_cases()["ts_ct"]], labels=["liver", "spleen", "stomach"],
                        strategy="full", output=str(output),
                        train=TrainConfig(iterations=iterations, time_budget=None, val_every=1000, patience=0,
                                          device="cpu", seed=0))
    return run_finetune(spec).model_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnunet-bin", required=True, type=Path,
                        help="bin folder of an environment with nnunetv2 (holds nnUNetv2_predict_from_modelfolder)")
    parser.add_argument("--model", type=Path, default=FIXTURE, help="nnU-Net v2 trained model folder (default: the fixture)")
    parser.add_argument("--export", action="store_true", help="also fine-tune, export-nnunet and compare (step 2)")
    parser.add_argument("--iterations", type=int, default=20, help="fine-tuning iterations for --export (default 20)")
    parser.add_argument("--export-only", action="store_true", help="skip step 1 (with --export)")
    args = parser.parse_args()
    paths = _images()
    images = {case: read_image(path) for case, path in paths.items()}
    worst = []
    with tempfile.TemporaryDirectory(prefix="nnunet-agreement-") as tmp:
        work = Path(tmp)
        labels = read_nnunet_folder(args.model).labels
        if not (args.export and args.export_only):
            theirs = nnunet_predict(args.nnunet_bin, args.model, images, work / "zero")
            ours = transferseg_predict(args.model, paths, work)
            worst.append(report(f"zero-shot, {args.model.name}: TransferSeg vs nnUNetv2_predict", labels, ours, theirs))
        if args.export:
            from TransferSegLib.models.base_model import load_model_dir
            from TransferSegLib.models.nnunet_export import export_nnunet

            tuned = finetuned_model(args.model, work / "tuned", args.iterations)
            exported = export_nnunet(tuned, work / "exported" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
            tuned_labels = load_model_dir(tuned).labels
            theirs = nnunet_predict(args.nnunet_bin, exported, images, work / "export")
            ours = transferseg_predict(tuned, paths, work)
            worst.append(report(f"exported fine-tuned model ({', '.join(tuned_labels[1:])}): nnUNetv2_predict on "
                                f"the export vs transferseg predict", tuned_labels, ours, theirs))
    return 0 if min(worst) >= 0.98 else 1


if __name__ == "__main__":
    sys.exit(main())
