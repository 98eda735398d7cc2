"""``transferseg experiment``: strategies × training-set sizes × repeats, with a report.

The options become one ``ExperimentSpec`` (cases resolved, files checked), whose
defaults are the ones printed here. With ``--job-dir`` that spec is stored in a
background job (the worker of ``jobs/``): progress, a ``run`` event per finished
run, cancel between iterations, and ``transferseg job resume`` that skips the runs
already done.
"""

from pathlib import Path
from typing import List

from TransferSegLib.errors import CaseError
from TransferSegLib.evaluation.experiment_spec import ExperimentSpec
from TransferSegLib.specs import TrainConfig

_DEFAULTS = ExperimentSpec(name="experiment", pool=[], labels=[], output="")


def add_parser(sub) -> None:
    d = _DEFAULTS
    p = sub.add_parser("experiment", help="data-efficiency experiment: strategies vs scratch across training-set sizes",
                       epilog="example:\n  transferseg experiment --sample-data --leave-one-out --labels liver "
                              "--sizes 1 --repeats 1 --output runs/liver")
    p.add_argument("--name", default=d.name, help="the experiment's name in its report (default: %(default)s)")
    p.add_argument("--dataset", help="dataset.json: its training cases form the pool")
    p.add_argument("--test-image", action="append", default=[], help="held-out test image (with --test-label)")
    p.add_argument("--test-label", action="append", default=[], help="held-out test labelmap (with --test-image)")
    p.add_argument("--sample-data", action="store_true", help="use the shipped sample CTs as the pool")
    p.add_argument("--add-case", nargs=3, action="append", default=[], metavar=("IMAGE", "LABEL", "NAMES"),
                   help="add a case to the pool; NAMES selects its classes like --labels (liver,tumor or liver=1+2)")
    p.add_argument("--leave-one-out", action="store_true", help="each pool case is the test case once")
    p.add_argument("--labels", required=True, metavar="CLASSES",
                   help="target classes NAME[,NAME]; for --test-label files also NAME=VALUE and merges NAME=V1+V2")
    p.add_argument("--label-names", metavar="FILE",
                   help="file naming the values of the plain labelmaps of --add-case and --test-label (see finetune)")
    p.add_argument("--base", default=d.base, help="base model every transfer strategy starts from (default: %(default)s)")
    p.add_argument("--strategies", default=",".join(d.strategies),
                   help="strategies to compare, comma-separated (default: %(default)s)")
    p.add_argument("--sizes", default=",".join(str(s) for s in d.sizes),
                   help="training-set sizes, comma-separated (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=d.repeats,
                   help="random draws of the training cases per size (default: %(default)s)")
    p.add_argument("--time-budget", type=float, default=d.train.time_budget, help="seconds per run (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=None, help="iterations per run (instead of a time budget)")
    p.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="patch size in voxels (without it: the base model's)")
    p.add_argument("--val-every", type=int, default=None,
                   help="validation period in iterations (default: finetune's, so that a run is what finetune does)")
    p.add_argument("--device", default=d.device, help="auto (first CUDA GPU, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed of the draws and the runs (default: %(default)s)")
    p.add_argument("--output", required=True, help="folder for the runs and report.md")
    p.add_argument("--job-dir", help="run as a background job in this folder (progress, cancel, resume)")
    p.add_argument("--detach", action="store_true", help="with --job-dir: start the job and return at once")
    p.set_defaults(func=run)


def _split(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_spec(args) -> ExperimentSpec:
    """The checked ``ExperimentSpec`` the options describe (cases resolved, their files present)."""
    from TransferSegLib.data.cases import cases_from_pairs
    from TransferSegLib.data.label_selection import parse_labels
    from TransferSegLib.data.manifest import cases_from_manifest
    from TransferSegLib.data.sample_data import sample_cases

    labels = parse_labels(args.labels).names
    pool = []
    if args.dataset:
        pool.extend(cases_from_manifest(args.dataset)[0])
    if args.sample_data:
        pool.extend(sample_cases()[k] for k in ("ts_ct", "ts_dicom"))
    names_file = getattr(args, "label_names", None)
    for image, label, names in args.add_case:
        pool.append(cases_from_pairs([image], [label], names, names_file=names_file)[0])
    tests = cases_from_pairs(args.test_image, args.test_label, args.labels, names_file=names_file) if args.test_image else []
    if not pool:
        raise CaseError("No cases: give --dataset, --sample-data or --add-case.")
    # Only the budget differs from `finetune`'s defaults: a run must be what the product does.
    train = TrainConfig(time_budget=None if args.iterations else args.time_budget, iterations=args.iterations)
    if args.val_every:
        train.val_every = args.val_every
    spec = ExperimentSpec(name=args.name, pool=pool, test_cases=tests, labels=labels,
                          output=str(Path(args.output).expanduser().resolve()),  # the worker may run elsewhere
                          leave_one_out=args.leave_one_out, base=args.base, strategies=_split(args.strategies),
                          sizes=[int(s) for s in _split(args.sizes)], repeats=args.repeats, train=train,
                          seed=args.seed, device=args.device,
                          patch_size=tuple(args.patch_size) if args.patch_size else None)
    spec.check()
    return spec


def run(args) -> int:
    spec = build_spec(args)
    if args.job_dir:
        return _run_as_job(spec, args)
    from TransferSegLib.evaluation.experiment import run_experiment
    from TransferSegLib.progress import format_run

    def on_run(result, skipped):
        print(format_run(dict(vars(result), mean_dice=result.mean_dice, skipped=skipped)), flush=True)

    results = run_experiment(spec, on_run=on_run)
    print(f"{len(results)} runs; report: {args.output}/report.md")
    return 0


def _run_as_job(spec: ExperimentSpec, args) -> int:
    from TransferSegLib.jobs.api import run_job_foreground, start_job
    from TransferSegLib.jobs.spec import JobSpec

    job_spec = JobSpec(task="experiment", experiment=spec, output=spec.output, device=spec.device,
                       seed=spec.seed, name=spec.name)
    if args.detach:
        job = start_job(job_spec, args.job_dir)
        print(f"started experiment job {job.directory} (pid {job.pid}); follow it with "
              f"'transferseg job watch {job.directory}'")
        return 0
    return run_job_foreground(job_spec, args.job_dir)
