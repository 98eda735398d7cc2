"""``transferseg demo``: the whole workflow on the shipped sample data, no Slicer, no GPU.

Liver is a genuinely new target for the shipped default base model (it was
withheld from its pretraining): fine-tune on one CT, predict a CT of another
patient, score it against that patient's reference and write a .seg.nrrd.
"""

import time
from pathlib import Path

from TransferSegLib.model_card import ModelCard
from TransferSegLib.paths import write_json_atomically
from TransferSegLib.specs import TrainConfig


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="fine-tune the default model on the sample data and score a CT of another patient",
                       epilog="example:\n  transferseg demo --output transferseg-demo --time-budget 120")
    p.add_argument("--output", default="transferseg-demo", help="folder for the model and the prediction")
    p.add_argument("--base", default="default", help="base model to fine-tune ('default': the shipped one)")
    p.add_argument("--strategy", default="auto", help="what to train (default: auto, as finetune)")
    p.add_argument("--time-budget", type=float, default=TrainConfig.time_budget,
                   help=f"fine-tuning budget in seconds (default: finetune's, {TrainConfig.time_budget:.0f})")
    p.add_argument("--iterations", type=int, default=None, help="train this many iterations instead of a budget")
    p.add_argument("--device", default="auto", help="auto (first CUDA GPU, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed: same run)")
    p.set_defaults(func=run)


def run(args) -> int:
    from TransferSegLib.evaluation.evaluate import evaluate_files, format_table
    from TransferSegLib.specs import FinetuneSpec
    from TransferSegLib.training.finetune import run_finetune
    from TransferSegLib.inference.infer import predict_file
    from TransferSegLib.progress import ProgressPrinter
    from TransferSegLib.data.sample_data import sample_cases

    out = Path(args.output).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    cases = sample_cases()
    train_case, test_case = cases["ts_ct"], cases["ts_dicom"]
    print(f"TransferSeg demo: liver, base '{args.base}', strategy {args.strategy}, budget "
          f"{args.iterations or ''}{' iterations' if args.iterations else f'{args.time_budget:.0f} s'}")
    print(f"  train on {Path(train_case.image).name} (TotalSegmentator example CT), "
          f"test on {Path(test_case.image).name} (another patient)")
    # Every setting at finetune's and predict's defaults: the demo shows what a plain run gives.
    config = TrainConfig(time_budget=None if args.iterations else args.time_budget, iterations=args.iterations,
                         device=args.device, seed=args.seed)
    spec = FinetuneSpec(base=args.base, cases=[train_case], labels=["liver"], strategy=args.strategy,
                        output=str(out / "liver-model"), train=config, name="liver (demo)")
    printer = ProgressPrinter()
    start = time.monotonic()
    result = run_finetune(spec, reporter=printer)
    printer.close()
    trained = time.monotonic() - start
    prediction = out / "ts_dicom_liver.seg.nrrd"
    start = time.monotonic()
    predicted_labels = predict_file(result.model_dir, Path(test_case.image), prediction, device=args.device)
    predicted = time.monotonic() - start
    reference = out / "ts_dicom_liver_reference.nii.gz"
    _write_reference(test_case, reference)
    metrics = evaluate_files(str(prediction), str(reference), labels=["liver"])
    print(format_table([metrics]))
    liver = metrics.classes[0]
    card = ModelCard.load(result.model_dir)
    summary = {
        "base": args.base, "strategy": card.strategy, "strategy_requested": args.strategy,
        "largest_component": predicted_labels.largest_component, "iterations": result.iterations,
        "train_seconds": round(trained, 1), "predict_seconds": round(predicted, 1),
        "held_out_liver_dice": round(liver.dice, 4), "model": str(result.model_dir), "prediction": str(prediction),
    }
    write_json_atomically(out / "demo_result.json", summary)
    print(f"held-out liver Dice {liver.dice:.3f} after {result.iterations} iterations of {card.strategy} "
          f"({trained:.0f} s); "
          f"prediction written to {prediction}")
    return 0


def _write_reference(case, path: Path) -> None:
    """The held-out case's liver alone, as the reference labelmap (value 1)."""
    import SimpleITK as sitk

    from TransferSegLib.data.cases import load_case

    loaded = load_case(case, ["background", "liver"])
    sitk.WriteImage(sitk.Cast(loaded.label, sitk.sitkUInt8), str(path), useCompression=True)
