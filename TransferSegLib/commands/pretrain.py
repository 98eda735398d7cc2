"""``transferseg pretrain``: make a base model (partial labels, or self-supervised)."""

from pathlib import Path

from TransferSegLib.commands.finetune import add_label_options


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a base model on partially labelled or unlabeled volumes",
                       epilog="example:\n  transferseg pretrain --sample-data --exclude liver --output models/base "
                              "--time-budget 1200")
    p.add_argument("--mode", choices=["partial-labels", "masked-reconstruction"], default="partial-labels",
                   help="partial-labels: segmentation with a loss masked to what each case annotates; "
                        "masked-reconstruction: self-supervised, images only (an encoder)")
    p.add_argument("--dataset", help="dataset.json (cases may carry 'annotated' lists: partial labels)")
    p.add_argument("--sample-data", action="store_true",
                   help="the shipped default model's collection: TotalSegmentator example CT (abdomen) + chest CT "
                        "(lungs, bones), partial labels")
    p.add_argument("--image", action="append", default=[], help="image (masked-reconstruction, or with --label); several co-registered channels as "
                        "'a.nii.gz,b.nii.gz' or 'T1=a.nii.gz,T2=b.nii.gz' (named: matched by name), or a 4D file")
    p.add_argument("--label", action="append", default=[], help="labelmap paired with --image")
    add_label_options(p)
    p.add_argument("--exclude", default="", help="classes to withhold NAME[,NAME] (kept new for later fine-tuning)")
    p.add_argument("--output", required=True, help="base model folder to write")
    p.add_argument("--name", default="", help="model name (without it: the output folder name)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="training budget in seconds (without it and without --iterations: 600)")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations instead of a budget (masked-reconstruction without it: 200)")
    p.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="patch size in voxels (without it: TransferSeg's default)")
    p.add_argument("--batch-size", type=int, default=2, help="patches per iteration")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--val-every", type=int, default=100, help="validate every N iterations")
    p.add_argument("--device", default="auto", help="auto (first CUDA GPU, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed and data: same run)")
    p.set_defaults(func=run)


def run(args) -> int:
    from TransferSegLib.data.cases import cases_from_pairs
    from TransferSegLib.data.manifest import cases_from_manifest
    from TransferSegLib.errors import CaseError
    from TransferSegLib.progress import ProgressPrinter
    from TransferSegLib.specs import TrainConfig

    printer = ProgressPrinter()
    from TransferSegLib.data.label_selection import parse_labels

    selection = parse_labels(args.labels)
    labels = selection.names
    exclude = [n.strip() for n in args.exclude.split(",") if n.strip()]
    if args.mode == "masked-reconstruction":
        from TransferSegLib.training.pretrain import MaskedReconstructionConfig, pretrain_masked_reconstruction

        config = MaskedReconstructionConfig(iterations=args.iterations or 200, batch_size=args.batch_size,
                                            learning_rate=args.learning_rate, seed=args.seed, device=args.device)
        if args.patch_size:
            config.patch_size = tuple(args.patch_size)
        out = pretrain_masked_reconstruction(args.image, args.output, config, reporter=printer)
        printer.close()
        print(f"encoder-only base model written to {out}")
        return 0
    from TransferSegLib.training.pretrain import pretrain_partial_labels

    cases = cases_from_pairs(args.image, args.label, selection or None, names_file=args.label_names,
                             unselected=args.unselected) if args.image else []
    if args.dataset:
        cases.extend(cases_from_manifest(args.dataset)[0])
    if args.sample_data:
        from TransferSegLib.data.sample_data import default_pretraining_cases

        cases.extend(default_pretraining_cases())
    if not cases:
        raise CaseError("No pretraining cases: give --dataset, --image/--label pairs or --sample-data.")
    budget = args.time_budget if args.time_budget or args.iterations else 600.0
    config = TrainConfig(time_budget=budget, iterations=args.iterations, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, val_every=args.val_every, patience=0,
                         seed=args.seed, device=args.device)
    result = pretrain_partial_labels(cases, args.output, config, labels=labels or None, exclude=exclude,
                                     patch_size=tuple(args.patch_size) if args.patch_size else None,
                                     reporter=printer, name=args.name or Path(args.output).name)
    printer.close()
    print(f"base model written to {result.model_dir} ({result.iterations} iterations)")
    return 0
