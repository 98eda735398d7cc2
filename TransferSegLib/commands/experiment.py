"""``transferseg experiment``: strategies × training-set sizes × repeats, with a report.

With ``--job-dir`` it runs as a background job (the worker of ``jobs/``): progress,
a ``run`` event per finished run, cancel between iterations, and ``transferseg job
resume`` that skips the runs already done.
"""

import argparse
from typing import Any, Dict, List

#: Options that say how to run, not what: never stored in an experiment job's spec.
_LAUNCH_OPTIONS = ("func", "job_dir", "detach", "command")


def add_parser(sub) -> None:
    p = sub.add_parser("experiment", help="data-efficiency experiment: strategies vs scratch across training-set sizes",
                       epilog="example:\n  transferseg experiment --sample-data --leave-one-out --labels liver "
                              "--sizes 1 --repeats 1 --output runs/liver")
    p.add_argument("--name", default="experiment", help="the experiment's name in its report")
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
    p.add_argument("--base", default="default", help="base model every transfer strategy starts from")
    p.add_argument("--strategies", default="scratch,full,decoder,last-layers,staged",
                   help="strategies to compare, comma-separated")
    p.add_argument("--sizes", default="1,2,3,5,10", help="training-set sizes, comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="random draws of the training cases per size")
    p.add_argument("--time-budget", type=float, default=60.0, help="seconds per run")
    p.add_argument("--iterations", type=int, default=None, help="iterations per run (instead of a time budget)")
    p.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="patch size in voxels (without it: the base model's)")
    p.add_argument("--val-every", type=int, default=None,
                   help="validation period in iterations (default: finetune's, so that a run is what finetune does)")
    p.add_argument("--device", default="auto", help="auto (first CUDA GPU, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="random seed of the draws and the runs")
    p.add_argument("--output", required=True, help="folder for the runs and report.md")
    p.add_argument("--job-dir", help="run as a background job in this folder (progress, cancel, resume)")
    p.add_argument("--detach", action="store_true", help="with --job-dir: start the job and return at once")
    p.set_defaults(func=run)


def _experiment_parser() -> argparse.ArgumentParser:
    """The ``experiment`` subcommand's parser: the one list of its options and their defaults."""
    subcommands = argparse.ArgumentParser(prog="transferseg").add_subparsers()
    add_parser(subcommands)
    return subcommands.choices["experiment"]


def options_from_spec(stored: Dict[str, Any]) -> argparse.Namespace:
    """The experiment's options from a job spec: defaults filled in, unknown names refused."""
    from TransferSegLib.errors import JobError

    # Every option's default (the two required ones left empty, so that a spec without them is refused below).
    values = vars(_experiment_parser().parse_args(["--labels", "", "--output", ""]))
    known = set(values) - set(_LAUNCH_OPTIONS)
    unknown = sorted(set(stored) - known)
    if unknown:
        raise JobError(f"spec.json 'experiment': unknown option '{unknown[0]}'; known: {', '.join(sorted(known))}.")
    values.update(stored)
    for required in ("labels", "output"):
        if not values.get(required):
            raise JobError(f"spec.json 'experiment' has no '{required}'.")
    return argparse.Namespace(**values)


def check_options(stored: Dict[str, Any]) -> None:
    """Cheap checks a front end can afford (no torch): the options parse, the files exist."""
    from pathlib import Path

    from TransferSegLib.errors import CaseError

    args = options_from_spec(stored)
    for group in ("test_image", "test_label"):
        for path in getattr(args, group) or []:
            if not Path(path).expanduser().exists():
                raise CaseError(f"The experiment's {group.replace('_', ' ')} '{path}' does not exist.")
    for image, label, _names in args.add_case or []:
        for path in (image, label):
            if not Path(path).expanduser().exists():
                raise CaseError(f"The experiment's case file '{path}' does not exist.")
    if args.dataset and not Path(args.dataset).expanduser().exists():
        raise CaseError(f"The experiment's dataset '{args.dataset}' does not exist.")


def _split(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_spec(args):
    """The ``ExperimentSpec`` the options describe (shared by the command and the job worker)."""
    from TransferSegLib.data.cases import cases_from_pairs
    from TransferSegLib.data.manifest import cases_from_manifest
    from TransferSegLib.errors import CaseError
    from TransferSegLib.evaluation.experiment import ExperimentSpec
    from TransferSegLib.training.train import TrainConfig

    from TransferSegLib.data.label_selection import parse_labels

    labels = parse_labels(args.labels).names
    pool = []
    if args.dataset:
        pool.extend(cases_from_manifest(args.dataset)[0])
    if args.sample_data:
        from TransferSegLib.data.sample_data import sample_cases

        pool.extend(sample_cases()[k] for k in ("ts_ct", "ts_dicom"))
    names_file = getattr(args, "label_names", None)
    for image, label, names in args.add_case:
        case = cases_from_pairs([image], [label], names, names_file=names_file)[0]
        pool.append(case)
    tests = cases_from_pairs(args.test_image, args.test_label, args.labels, names_file=names_file) if args.test_image else []
    if not pool:
        raise CaseError("No cases: give --dataset, --sample-data or --add-case.")
    folds = None
    if args.leave_one_out:
        folds = [{"pool": [c for j, c in enumerate(pool) if j != i], "test": [pool[i]]} for i in range(len(pool))]
    elif not tests:
        raise CaseError("Give held-out --test-image/--test-label pairs or --leave-one-out.")
    # Only the budget differs from `finetune`'s defaults: a run must be what the product does.
    config = TrainConfig(time_budget=None if args.iterations else args.time_budget, iterations=args.iterations)
    if args.val_every:
        config.val_every = args.val_every
    spec = ExperimentSpec(name=args.name, pool=pool, test_cases=tests, labels=labels, output=args.output,
                          base=args.base, strategies=_split(args.strategies), sizes=[int(s) for s in _split(args.sizes)],
                          repeats=args.repeats, train=config, seed=args.seed, device=args.device, folds=folds,
                          patch_size=tuple(args.patch_size) if args.patch_size else None)
    return spec


def run(args) -> int:
    if args.job_dir:
        return _run_as_job(args)
    from TransferSegLib.evaluation.experiment import run_experiment
    from TransferSegLib.progress import format_run

    spec = build_spec(args)

    def on_run(result, skipped):
        print(format_run(dict(vars(result), mean_dice=result.mean_dice, skipped=skipped)), flush=True)

    results = run_experiment(spec, on_run=on_run)
    print(f"{len(results)} runs; report: {args.output}/report.md")
    return 0


def _run_as_job(args) -> int:
    from TransferSegLib.jobs.api import run_job_foreground, start_job
    from TransferSegLib.jobs.spec import JobSpec

    from pathlib import Path

    stored = {k: v for k, v in vars(args).items() if k not in _LAUNCH_OPTIONS}
    stored["output"] = str(Path(args.output).expanduser().resolve())  # the worker may run elsewhere
    check_options(stored)
    job_spec = JobSpec(task="experiment", experiment=stored, output=str(args.output), device=args.device,
                       seed=args.seed, name=args.name)
    if args.detach:
        job = start_job(job_spec, args.job_dir)
        print(f"started experiment job {job.directory} (pid {job.pid}); follow it with "
              f"'transferseg job watch {job.directory}'")
        return 0
    return run_job_foreground(job_spec, args.job_dir)
