"""``transferseg predict``: a fine-tuned model + an image → a labelmap on the image's grid."""

import time
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict a segmentation with a fine-tuned model (or a base model itself)",
                       epilog="examples:\n  transferseg predict --model models/liver --image ct3.nii.gz --output ct3_liver.seg.nrrd\n"
                              "  transferseg predict --model default --image ct3.nii.gz --output ct3_organs.seg.nrrd")
    p.add_argument("--model", required=True,
                   help="fine-tuned model folder (model.json + model.pt), or a base model to predict with as it is: "
                        "'default', a catalog or registered name, a MONAI bundle")
    p.add_argument("--image", required=True,
                   help="image file (NIfTI, NRRD, MHA, .mrc) or DICOM folder; a model of several channels: "
                        "FILE,FILE,... or NAME=FILE,... in any order (matched to the model's channel names), "
                        "or one 4D file")
    p.add_argument("--output", required=True, help="output labelmap: .nii.gz or .seg.nrrd (named, colored segments)")
    p.add_argument("--device", default="auto", help="auto (first CUDA GPU, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--tta", action="store_true", help="average mirrored predictions (slower, smoother)")
    p.add_argument("--largest-component", action="store_true", help="keep only the largest component per organ")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap, 0 to 0.9")
    p.add_argument("--probabilities", metavar="FILE", help="also write per-class probabilities (vector image)")
    p.add_argument("--uncertainty", metavar="FILE", help="also write a per-voxel normalized entropy image")
    p.set_defaults(func=run)


def run(args) -> int:
    from TransferSegLib.inference.infer import predict_file

    start = time.monotonic()
    prediction = predict_file(
        Path(args.model), Path(args.image), Path(args.output), device=args.device, tta=args.tta,
        largest_component=args.largest_component, overlap=args.overlap,
        probabilities_path=Path(args.probabilities) if args.probabilities else None,
        uncertainty_path=Path(args.uncertainty) if args.uncertainty else None,
    )
    print(f"wrote {args.output} ({len(prediction.labels) - 1} labels: {', '.join(prediction.labels[1:])}) "
          f"in {time.monotonic() - start:.1f} s")
    return 0
