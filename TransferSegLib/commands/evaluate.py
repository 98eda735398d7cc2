"""``transferseg evaluate``: compare a prediction with a reference segmentation."""

import json


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="Dice, IoU, HD95, ASSD, RVD and surface Dice of a prediction")
    p.add_argument("--prediction", required=True, help="predicted labelmap (.nii.gz or .seg.nrrd)")
    p.add_argument("--reference", required=True, help="reference labelmap on the same grid")
    p.add_argument("--labels", default="", help="classes NAME[,NAME] (names label values 1..N of plain labelmaps)")
    p.add_argument("--tolerance", type=float, default=2.0, help="surface Dice tolerance in mm")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from TransferSegLib.evaluation.evaluate import evaluate_files, format_table, metrics_to_json

    labels = [n.strip() for n in args.labels.split(",") if n.strip()] or None
    metrics = evaluate_files(args.prediction, args.reference, labels=labels, tolerance_mm=args.tolerance)
    if args.json:
        print(json.dumps(metrics_to_json([metrics]), indent=2))
    else:
        print(format_table([metrics]))
    return 0
