"""``transferseg experiment``: strategies × training-set sizes × repeats, with a report."""

from typing import List


def add_parser(sub) -> None:
    p = sub.add_parser("experiment", help="data-efficiency experiment: strategies vs scratch across training-set sizes")
    p.add_argument("--name", default="experiment")
    p.add_argument("--dataset", help="dataset.json: its training cases form the pool")
    p.add_argument("--test-image", action="append", default=[], help="held-out test image (with --test-label)")
    p.add_argument("--test-label", action="append", default=[])
    p.add_argument("--sample-data", action="store_true", help="use the shipped sample CTs as the pool")
    p.add_argument("--add-case", nargs=3, action="append", default=[], metavar=("IMAGE", "LABEL", "NAMES"),
                   help="add a case to the pool; NAMES names label values 1..N (e.g. liver,tumor)")
    p.add_argument("--leave-one-out", action="store_true", help="each pool case is the test case once")
    p.add_argument("--labels", required=True, help="target classes NAME[,NAME]")
    p.add_argument("--base", default="default")
    p.add_argument("--strategies", default="scratch,full,decoder,last-layers,staged")
    p.add_argument("--sizes", default="1,2,3,5,10")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--time-budget", type=float, default=60.0, help="seconds per run")
    p.add_argument("--iterations", type=int, default=None, help="iterations per run (instead of a time budget)")
    p.add_argument("--patch-size", type=int, nargs=3, default=None)
    p.add_argument("--val-every", type=int, default=1000000, help="validation period (default: only at the end)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True)
    p.set_defaults(func=run)


def _split(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run(args) -> int:
    from ..cases import Case, cases_from_manifest, cases_from_pairs
    from ..errors import CaseError
    from ..experiment import ExperimentSpec, run_experiment
    from ..train import TrainConfig

    labels = _split(args.labels)
    pool = []
    if args.dataset:
        pool.extend(cases_from_manifest(args.dataset)[0])
    if args.sample_data:
        from ..sample_data import sample_cases

        pool.extend(sample_cases()[k] for k in ("ts_ct", "ts_dicom"))
    for image, label, names in args.add_case:
        case = cases_from_pairs([image], [label], _split(names))[0]
        pool.append(case)
    tests = cases_from_pairs(args.test_image, args.test_label, labels) if args.test_image else []
    if not pool:
        raise CaseError("No cases: give --dataset, --sample-data or --add-case.")
    folds = None
    if args.leave_one_out:
        folds = [{"pool": [c for j, c in enumerate(pool) if j != i], "test": [pool[i]]} for i in range(len(pool))]
    elif not tests:
        raise CaseError("Give held-out --test-image/--test-label pairs or --leave-one-out.")
    config = TrainConfig(time_budget=None if args.iterations else args.time_budget, iterations=args.iterations,
                         val_every=args.val_every, patience=0)
    spec = ExperimentSpec(name=args.name, pool=pool, test_cases=tests, labels=labels, output=args.output,
                          base=args.base, strategies=_split(args.strategies), sizes=[int(s) for s in _split(args.sizes)],
                          repeats=args.repeats, train=config, seed=args.seed, device=args.device, folds=folds,
                          patch_size=tuple(args.patch_size) if args.patch_size else None)

    def on_run(result, skipped):
        state = "skipped (done)" if skipped else f"{result.train_seconds:.0f} s"
        print(f"fold {result.fold} {result.strategy:12s} n={result.size} r={result.repeat}: "
              f"Dice {result.mean_dice:.3f} [{state}]", flush=True)

    results = run_experiment(spec, on_run=on_run)
    print(f"{len(results)} runs; report: {args.output}/report.md")
    return 0
