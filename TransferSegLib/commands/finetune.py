"""``transferseg finetune``: fine-tune a base model on a few annotated cases.

By default the run goes through the job layer (a worker process writing
events.jsonl into a job folder) exactly as the Slicer panel runs it, and the
terminal shows its progress; ``--detach`` returns at once.
"""

from pathlib import Path
from typing import List, Optional, Tuple

from TransferSegLib.errors import CaseError, TransferSegError


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a base model on a few annotated cases")
    p.add_argument("--base", default="default",
                   help="base model: catalog name, 'default' (shipped), a model folder or bundle, or 'none' (scratch)")
    p.add_argument("--dataset", help="nnU-Net / Decathlon style dataset.json")
    p.add_argument("--image", action="append", default=[], help="training image (repeat with --label)")
    p.add_argument("--label", action="append", default=[], help="training labelmap (.nii.gz, .nrrd, .seg.nrrd)")
    p.add_argument("--val-image", action="append", default=[], help="validation image (repeat with --val-label)")
    p.add_argument("--val-label", action="append", default=[], help="validation labelmap")
    p.add_argument("--labels", default="",
                   help="target classes NAME[,NAME]: label values 1..N of plain labelmaps, names for .seg.nrrd/manifests")
    p.add_argument("--strategy", default="last-layers",
                   choices=["scratch", "full", "decoder", "last-layers", "staged"], help="what to train (default: last-layers)")
    p.add_argument("--time-budget", type=float, default=None, help="wall-clock budget in seconds (default 300 if no --iterations)")
    p.add_argument("--iterations", type=int, default=None, help="number of training iterations")
    p.add_argument("--output", required=True, help="model folder to write (an existing model is replaced only when done)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="patch size in voxels")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--val-every", type=int, default=50, help="validate every N iterations")
    p.add_argument("--patience", type=int, default=10, help="early stopping after N validations without improvement (0: off)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="target spacing in mm (scratch only)")
    p.add_argument("--intensity", help="intensity recipe (scratch only): window:LOW:HIGH, zscore or zscore-nonzero")
    p.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for PyTorch (0: its default)")
    p.add_argument("--name", default="", help="model name shown in Slicer (default: the output folder name)")
    p.add_argument("--offline", action="store_true", help="never download; use cached models only")
    p.add_argument("--job-dir", help="job folder (default: a new one under ~/.transferseg/jobs)")
    p.add_argument("--detach", action="store_true", help="start the job in the background and return")
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


def _pairs(images: List[str], labels: List[str], names: List[str], what: str):
    from TransferSegLib.data.cases import cases_from_pairs

    if len(images) != len(labels):
        raise CaseError(f"Give one {what}label for each {what}image: got {len(images)} images and {len(labels)} labels.")
    return cases_from_pairs(images, labels, names or None) if images else []


def spec_from_args(args):
    """A FinetuneSpec from parsed arguments (shared with the job layer and the demo)."""
    from TransferSegLib.data.cases import cases_from_manifest
    from TransferSegLib.training.finetune import FinetuneSpec
    from TransferSegLib.data.recipe import Recipe
    from TransferSegLib.training.train import TrainConfig

    names = [n.strip() for n in args.labels.split(",") if n.strip()] if args.labels else []
    cases = _pairs(args.image, args.label, names, "")
    if args.dataset:
        manifest_cases, _extra = cases_from_manifest(args.dataset)
        cases.extend(manifest_cases)
    val_cases = _pairs(args.val_image, args.val_label, names, "validation ")
    budget = args.time_budget
    if budget is None and args.iterations is None:
        budget = 300.0
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
    spec = spec_from_args(args)
    if args.in_process:
        from TransferSegLib.training.finetune import run_finetune
        from TransferSegLib.progress import ProgressPrinter

        printer = ProgressPrinter()
        result = run_finetune(spec, reporter=printer)
        printer.close()
        print(f"model written to {result.model_dir}")
        return 0
    from TransferSegLib.jobs.api import run_job_foreground, start_job
    from TransferSegLib.jobs.spec import JobSpec

    job_spec = JobSpec.from_finetune_spec(spec)
    job_spec.processes = max(1, int(args.processes))
    if args.detach:
        job = start_job(job_spec, args.job_dir)
        print(f"started job {job.directory} (pid {job.pid}); follow it with 'transferseg job watch {job.directory}'")
        return 0
    return run_job_foreground(job_spec, args.job_dir)
