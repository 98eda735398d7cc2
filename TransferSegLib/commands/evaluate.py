"""``transferseg evaluate``: compare a prediction with a reference segmentation."""

import json
import sys

EPILOG = """examples:
  transferseg evaluate --prediction ct3_liver.seg.nrrd --reference ct3_ref.nii.gz --labels liver=5
  transferseg evaluate --prediction ct3_liver.seg.nrrd --reference ts_seg.nii.gz \\
      --label-names label_names.json:total --labels liver,spleen --json
"""


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="Dice, IoU, HD95, ASSD, RVD and surface Dice of a prediction", epilog=EPILOG)
    p.add_argument("--prediction", required=True, help="predicted labelmap (.nii.gz or .seg.nrrd)")
    p.add_argument("--reference", required=True,
                   help="reference labelmap: on the prediction's grid, or the same voxels with axes permuted or "
                        "flipped (re-indexed exactly); any other grid needs --resample")
    p.add_argument("--labels", default="", metavar="CLASSES",
                   help="classes to score: NAME (found by name in .seg.nrrd files and --label-names; values 1..N of "
                        "plain labelmaps otherwise), NAME=VALUE, NAME=V1+V2 (merge); without it: the reference's "
                        "classes")
    p.add_argument("--label-names", metavar="FILE",
                   help="names for the values of the plain labelmaps, prediction and reference alike (Slicer color table, ITK-SNAP label file, JSON, "
                        "TotalSegmentator's label_names.json:TASK, .seg.nrrd)")
    p.add_argument("--resample", action="store_true",
                   help="resample a reference on another grid onto the prediction's grid (nearest neighbour)")
    p.add_argument("--tolerance", type=float, default=2.0, help="surface Dice tolerance in mm")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from TransferSegLib.evaluation.evaluate import evaluate_files, format_table, metrics_to_json

    notes = []
    metrics = evaluate_files(args.prediction, args.reference, labels=args.labels or None, tolerance_mm=args.tolerance,
                             names_file=args.label_names, resample=args.resample, notes=notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics_to_json([metrics]), indent=2))
    else:
        print(format_table([metrics]))
    return 0
