"""``transferseg finetune``: fine-tune a base model on a few annotated cases.

By default the run goes through the job layer (a worker process writing
events.jsonl into a job folder) exactly as the Slicer panel runs it, and the
terminal shows its progress; ``--detach`` returns at once.
"""

import sys
from pathlib import Path
from typing import List, Optional, Tuple

from TransferSegLib.errors import CaseError, TransferSegError
from TransferSegLib.specs import DEFAULT_STRATEGY, STRATEGY_CHOICES, FinetuneSpec, TrainConfig

_DEFAULTS = TrainConfig()


#: ``--labels`` help shared by finetune, experiment, pretrain and evaluate.
LABELS_HELP = ("classes, comma-separated: NAME (by name, from a .seg.nrrd, a manifest or --label-names), NAME=VALUE "
               "(liver=5), NAME=V1+V2 (merge: liver=1+2); bare names of a plain labelmap without names are "
               "values 1..N")
LABEL_NAMES_HELP = ("file naming the values of plain labelmaps: Slicer color table (.ctbl/.txt), ITK-SNAP label "
                    "file, JSON value->name, TotalSegmentator's label_names.json:TASK or map_to_binary.py:TASK, "
                    "or a .seg.nrrd")
UNSELECTED_HELP = ("what labelled voxels no selected class takes become: background, or unannotated (left out of "
                   "the loss, for partial labels). Without it: background when classes are selected by value, "
                   "name file or .seg.nrrd; bare names numbering 1..N refuse other values")

EPILOG = """examples:
  transferseg finetune --base default --image ct.nii.gz --label seg.nii.gz \\
      --label-names label_names.json:total --labels liver --output models/liver
  transferseg finetune --image ct.nii.gz --label seg.nii.gz --labels liver=1+2 --output models/liver
"""


def add_label_options(p, labels_required: bool = False) -> None:
    """--labels, --label-names and --unselected, the same for every command that reads labelmaps."""
    p.add_argument("--labels", required=labels_required, default="", metavar="CLASSES", help=LABELS_HELP)
    p.add_argument("--label-names", metavar="FILE", help=LABEL_NAMES_HELP)
    p.add_argument("--unselected", choices=("background", "unannotated"), help=UNSELECTED_HELP)


def add_parser(sub) -> None:
    d = _DEFAULTS
    p = sub.add_parser("finetune", help="fine-tune a base model on a few annotated cases", epilog=EPILOG,
                       description="Fine-tune a base model on a few annotated cases; writes a model folder.")
    p.add_argument("--base", default="default",
                   help="base model: catalog name, 'default' (shipped), a model folder or bundle, or 'none' (scratch)")
    p.add_argument("--dataset", metavar="DATASET_JSON", help="nnU-Net / Decathlon style dataset.json")
    p.add_argument("--image", action="append", default=[],
                   help="training image (repeat with --label); a case of several channels: FILE,FILE,... or "
                        "NAME=FILE,NAME=FILE,... (names as the base model's channels, e.g. T1c=a.nii.gz,T1=b.nii.gz), "
                        "or one 4D file")
    p.add_argument("--label", action="append", default=[], help="training labelmap (.nii.gz, .nrrd, .seg.nrrd)")
    p.add_argument("--val-image", action="append", default=[],
                   help="validation image (repeat with --val-label); without: 1 in 5 cases when there are 3 or more")
    p.add_argument("--val-label", action="append", default=[], help="validation labelmap")
    add_label_options(p)
    p.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=list(STRATEGY_CHOICES),
                   help="what to train: auto (default: what the base model's own experiment found best, else full; "
                        "the first progress line says which and why), scratch, full, decoder (encoder frozen), "
                        "last-layers, staged")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help=f"wall-clock training budget in seconds (without it and without --iterations: {d.time_budget:g})")
    p.add_argument("--iterations", type=int, default=None, help="number of training iterations (instead of a budget)")
    p.add_argument("--output", required=True, help="model folder to write (an existing model is replaced only when done)")
    p.add_argument("--device", default=d.device, help="auto (first CUDA GPU, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed and data: same run)")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="patch size in voxels (without it: the base model's)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="patches per iteration (default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate,
                   help="peak learning rate (AdamW; default: %(default)s)")
    p.add_argument("--val-every", type=int, default=d.val_every, help="validate every N iterations (default: %(default)s)")
    p.add_argument("--patience", type=int, default=d.patience,
                   help="early stopping after N validations without improvement (0: off; default: %(default)s)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="target spacing in mm (scratch only; without it: the base model's)")
    p.add_argument("--intensity", help="intensity recipe (scratch only): window:LOW:HIGH, zscore or zscore-nonzero")
    p.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    p.add_argument("--threads", type=int, default=d.num_threads, help="CPU threads for PyTorch (0: its default)")
    p.add_argument("--name", default="", help="model name shown in Slicer (without it: the output folder name)")
    p.add_argument("--offline", action="store_true", help="never download; use cached models only")
    p.add_argument("--job-dir", help="job folder (without it: a new one under ~/.transferseg/jobs)")
    p.add_argument("--detach", action="store_true", help="start the job in the background and return")
    p.add_argument("--keep-job", action="store_true",
                   help="keep the job folder of a finished foreground run (failed and cancelled runs always keep it)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the training checkpoints of a finished run (failed and cancelled runs always keep them)")
    p.add_argument("--processes", type=int, default=1,
                   help="data-parallel processes through torchrun (one per GPU; needs --iterations)")
    p.add_argument("--in-process", action="store_true", help="train in this process (no worker, no job folder)")
    p.set_defaults(func=run)


def parse_intensity(text: Optional[str]):
    from TransferSegLib.data.recipe import IntensitySpec

    if not text:
        return None
    parts = text.split(":")
    if parts[0] == "window" and len(parts) == 3:
        return IntensitySpec(kind="window", low=float(parts[1]), high=float(parts[2]))
    if parts[0] == "zscore":
        return IntensitySpec(kind="zscore")
    if parts[0] == "zscore-nonzero":
        return IntensitySpec(kind="zscore", nonzero=True)
    raise TransferSegError(f"--intensity '{text}' is not window:LOW:HIGH, zscore or zscore-nonzero.")


def _pairs(images: List[str], labels: List[str], args, what: str):
    from TransferSegLib.data.cases import cases_from_pairs

    if len(images) != len(labels):
        raise CaseError(f"Give one {what}label for each {what}image: got {len(images)} images and {len(labels)} labels.")
    if not images:
        return []
    return cases_from_pairs(images, labels, args.labels or None, names_file=getattr(args, "label_names", None),
                            unselected=getattr(args, "unselected", None))


def spec_from_args(args):
    """A FinetuneSpec from parsed arguments (shared with the job layer and the demo)."""
    from TransferSegLib.data.cases import select_labels
    from TransferSegLib.data.manifest import cases_from_manifest
    from TransferSegLib.data.label_selection import parse_labels
    from TransferSegLib.data.recipe import Recipe

    selection = parse_labels(args.labels)
    names = selection.names
    cases = _pairs(args.image, args.label, args, "")
    if args.dataset:
        manifest_cases, _extra = cases_from_manifest(args.dataset)
        cases.extend(select_labels(manifest_cases, selection, getattr(args, "unselected", None)))
    val_cases = _pairs(args.val_image, args.val_label, args, "validation ")
    budget = args.time_budget
    if budget is None and args.iterations is None:
        budget = _DEFAULTS.time_budget
    config = TrainConfig(
        batch_size=args.batch_size, iterations=args.iterations, time_budget=budget,
        learning_rate=args.learning_rate, val_every=args.val_every, patience=args.patience,
        seed=args.seed, device=args.device, augment=not args.no_augment, num_threads=args.threads,
    )
    recipe = None
    if args.spacing or args.intensity:
        recipe = Recipe()
        if args.spacing:
            recipe.spacing = tuple(args.spacing)
        intensity = parse_intensity(args.intensity)
        if intensity is not None:
            recipe.intensity = intensity.steps()
    patch: Optional[Tuple[int, int, int]] = tuple(args.patch_size) if args.patch_size else None  # type: ignore[assignment]
    return FinetuneSpec(
        base=args.base, cases=cases, labels=names, strategy=args.strategy, output=str(Path(args.output).expanduser()),
        train=config, val_cases=val_cases, recipe=recipe, patch_size=patch, name=args.name, offline=args.offline,
    )


def run(args) -> int:
    from TransferSegLib.training.finetune import check_finetune_spec

    spec = spec_from_args(args)
    spec.keep_checkpoints = bool(args.keep_checkpoints)
    check_finetune_spec(spec)  # settings and --output refused now, not after a worker has trained
    if args.in_process:
        from TransferSegLib.training.finetune import run_finetune
        from TransferSegLib.progress import ProgressPrinter

        printer = ProgressPrinter()
        result = run_finetune(spec, reporter=printer)
        printer.close()
        print(f"model written to {result.model_dir}")
        return 0
    from TransferSegLib.jobs.api import start_job
    from TransferSegLib.jobs.spec import JobSpec

    job_spec = JobSpec.from_finetune_spec(spec)
    job_spec.processes = max(1, int(args.processes))
    if args.detach:
        job = start_job(job_spec, args.job_dir)
        print(f"started job {job.directory} (pid {job.pid}); follow it with 'transferseg job watch {job.directory}'")
        return 0
    return run_in_foreground(job_spec, args.job_dir, keep_job=bool(args.keep_job))


def run_in_foreground(job_spec, job_dir: Optional[str], keep_job: bool) -> int:
    """Run the job with its progress here. Its folder (one this command made up) goes once the job
    finished, or was refused before it started (the error is on the terminal), unless ``keep_job``;
    a failed or cancelled job keeps it for ``transferseg job resume``. A folder given with --job-dir stays."""
    from TransferSegLib.jobs.api import run_job_foreground
    from TransferSegLib.jobs.cleanup import remove_job_folder
    from TransferSegLib.jobs.layout import new_job_directory

    tidy = job_dir is None and not keep_job
    directory = Path(job_dir).expanduser() if job_dir else new_job_directory()
    try:
        code = run_job_foreground(job_spec, directory)
    except TransferSegError:
        if tidy:
            remove_job_folder(directory)
        raise
    if code == 0 and tidy:
        remove_job_folder(directory)
        print(f"removed the finished job's folder {directory} (--keep-job keeps it)", file=sys.stderr)
    return code
