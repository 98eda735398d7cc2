"""``transferseg predict``: a fine-tuned model + an image → a labelmap on the image's grid."""

import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Union

ALL = "*"


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict a segmentation with a fine-tuned model (or a base model itself)",
                       epilog="examples:\n  transferseg predict --model models/liver --image ct3.nii.gz --output ct3_liver.seg.nrrd\n"
                              "  transferseg predict --model default --image ct3.nii.gz --output ct3_organs.seg.nrrd")
    p.add_argument("--model", required=True,
                   help="fine-tuned model folder (model.json + model.pt), an nnU-Net v2 trained model folder "
                        "(plans.json, dataset.json, fold_X/), or a base model to predict with as it is: "
                        "'default', a catalog or registered name, a MONAI bundle")
    p.add_argument("--image", required=True,
                   help="image file (NIfTI, NRRD, MHA, .mrc) or DICOM folder; a model of several channels: "
                        "FILE,FILE,... or NAME=FILE,... in any order (matched to the model's channel names), "
                        "or one 4D file")
    p.add_argument("--output", required=True, help="output labelmap: .nii.gz or .seg.nrrd (named, colored segments)")
    p.add_argument("--device", default="auto", help="auto (first CUDA GPU, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--tta", action="store_true", help="average mirrored predictions (slower, smoother)")
    p.add_argument("--largest-component", nargs="?", const=ALL, default=None, metavar="NAME[,NAME]",
                   help="keep only the largest connected component of every class, or of the named classes "
                        "(default: what the model decided per class on its validation cases, else by anatomy; "
                        "'transferseg models show MODEL' lists it)")
    p.add_argument("--no-largest-component", nargs="?", const=ALL, default=None, metavar="NAME[,NAME]",
                   help="keep every component of every class, or of the named classes (overrides the model)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (0-0.9; default 0.5)")
    p.add_argument("--probabilities", metavar="FILE", help="also write per-class probabilities (vector image)")
    p.add_argument("--uncertainty", metavar="FILE", help="also write a per-voxel normalized entropy image")
    p.add_argument("--fold", action="append", default=None, metavar="FOLD",
                   help="nnU-Net models: a fold to use (0-4 or all; repeat for several; default: every fold present, "
                        "their logits averaged as nnUNetv2_predict does)")
    p.set_defaults(func=run)


def _names(text: Optional[str]) -> List[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def cleanup_override(keep: Optional[str], drop: Optional[str]) -> Union[None, bool, Dict[str, bool]]:
    """The clean-up override of ``--largest-component`` / ``--no-largest-component``; None: the model's decisions.

    A flag without names applies to every class; with names, to those classes only (the
    others follow the model). Both flags may name classes; both without names is an error.
    """
    from TransferSegLib.errors import TransferSegError

    if keep == ALL and drop == ALL:
        raise TransferSegError("--largest-component and --no-largest-component without class names contradict "
                               "each other: give one, or name the classes for each.")
    if keep == ALL or drop == ALL:
        if keep not in (None, ALL) or drop not in (None, ALL):
            raise TransferSegError("A flag without names applies to every class: name the classes for both flags "
                                   "(e.g. --largest-component liver --no-largest-component tumor).")
        return keep == ALL
    if keep is None and drop is None:
        return None
    override = {name: True for name in _names(keep)}
    for name in _names(drop):
        if name in override:
            raise TransferSegError(f"Class '{name}' is named by both --largest-component and --no-largest-component.")
        override[name] = False
    return override


class WindowProgress:
    """Prints the sliding window's progress (``sliding window (44%), 12 s, about 15 s left``): every
    5 points or 2 s, and at 100 %. The Slicer panel reads the percentage from the same lines."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.start = time.monotonic()
        self.shown, self.at = -1, 0.0

    def __call__(self, fraction: float) -> None:
        percent, now = int(100 * fraction), time.monotonic()
        if percent <= self.shown or (percent < 100 and percent - self.shown < 5 and now - self.at < 2.0):
            return
        elapsed = now - self.start
        left = f", about {elapsed * (1 - fraction) / fraction:.0f} s left" if 0 < fraction < 1 else ""
        print(f"sliding window ({percent}%), {elapsed:.0f} s{left}", file=self.stream, flush=True)
        self.shown, self.at = percent, now


def run(args) -> int:
    from TransferSegLib.inference.infer import predict_file

    start = time.monotonic()
    prediction = predict_file(
        Path(args.model), Path(args.image), Path(args.output), device=args.device, tta=args.tta,
        largest_component=cleanup_override(args.largest_component, args.no_largest_component), overlap=args.overlap,
        probabilities_path=Path(args.probabilities) if args.probabilities else None,
        uncertainty_path=Path(args.uncertainty) if args.uncertainty else None,
        folds=args.fold, on_progress=WindowProgress(),
    )
    cleaned = ", ".join(prediction.largest_component) or "none"
    print(f"wrote {args.output} ({len(prediction.labels) - 1} labels: {', '.join(prediction.labels[1:])}; "
          f"largest component kept for: {cleaned}) in {time.monotonic() - start:.1f} s")
    return 0
