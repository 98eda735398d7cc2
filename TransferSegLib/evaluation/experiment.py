"""Data-efficiency experiments: strategies × training-set sizes × repeated random subsets.

The protocol of the transfer-learning papers TransferSeg builds on: fixed held-out
test cases; for each training-set size, several random subsets of the training
pool (the same subsets for every strategy, so strategies are compared on equal
data); every run scored per case and per class. Each run writes its own
``result.json``; a rerun skips finished runs, so an interrupted experiment resumes.
"""

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from TransferSegLib.data.cases import load_case
from TransferSegLib.errors import CaseError
from TransferSegLib.evaluation.experiment_spec import ExperimentSpec
from TransferSegLib.evaluation.metrics import compute_metrics
from TransferSegLib.inference.infer import predict_file
from TransferSegLib.model_card import ModelCard
from TransferSegLib.names import with_background
from TransferSegLib.paths import write_atomically, write_json_atomically, write_text_atomically
from TransferSegLib.specs import Case, FinetuneSpec, TrainConfig
from TransferSegLib.training.finetune import run_finetune
from TransferSegLib.training.loop import Reporter


@dataclass
class RunResult:
    strategy: str
    size: int
    repeat: int
    fold: int
    train_cases: List[str]
    iterations: int
    train_seconds: float
    per_case: List[Dict[str, Any]]
    strategy_used: str = ""  # what "auto" resolved to (the strategy itself otherwise)
    largest_component: List[str] = field(default_factory=list)  # classes the prediction cleaned up

    @property
    def mean_dice(self) -> float:
        values = [c["dice"] for case in self.per_case for c in case["classes"]]
        return float(np.mean(values)) if values else float("nan")


def subsets(pool_size: int, size: int, repeats: int, seed: int) -> List[List[int]]:
    """``repeats`` distinct random subsets of ``size`` indices (fewer if the pool is small)."""
    rng = np.random.default_rng(seed)
    if size >= pool_size:
        return [list(range(pool_size))]
    chosen: List[List[int]] = []
    attempts = 0
    while len(chosen) < repeats and attempts < repeats * 20:
        attempts += 1
        pick = sorted(int(i) for i in rng.choice(pool_size, size, replace=False))
        if pick not in chosen:
            chosen.append(pick)
    return chosen


def run_experiment(
    spec: ExperimentSpec,
    reporter: Optional[Reporter] = None,
    on_run: Optional[Callable[[RunResult, bool], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> List[RunResult]:
    """Run (or resume) every run of the experiment; returns all results.

    ``should_stop`` is polled by every run's training loop: a stopped run leaves no
    ``result.json``, so running the experiment again redoes only that run and the rest.
    """
    out = Path(spec.output)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    labels = with_background(spec.labels)
    results: List[RunResult] = []
    for fold_index, fold in enumerate(spec.folds()):
        pool, tests = fold["pool"], fold["test"]
        if not pool or not tests:
            raise CaseError(f"Experiment '{spec.name}' fold {fold_index} needs training and test cases.")
        references = [(c, load_case(c, labels)) for c in tests]
        for size in spec.sizes:
            if size > len(pool):
                continue
            for repeat, picks in enumerate(subsets(len(pool), size, spec.repeats, spec.seed + 1000 * fold_index + size)):
                train_cases = [pool[i] for i in picks]
                for strategy in spec.strategies:
                    run_dir = out / "runs" / f"f{fold_index}_{strategy}_n{size}_r{repeat}"
                    done = run_dir / "result.json"
                    if done.is_file():
                        result = RunResult(**json.loads(done.read_text(encoding="utf-8")))
                        results.append(result)
                        if on_run:
                            on_run(result, True)
                        continue
                    result = _one_run(spec, strategy, size, repeat, fold_index, train_cases, references, labels, run_dir,
                                      reporter, should_stop)
                    write_json_atomically(done, asdict(result), indent=1)  # written last: the run is done
                    results.append(result)
                    if on_run:
                        on_run(result, False)
    write_reports(spec, results)
    return results


def _one_run(spec, strategy, size, repeat, fold, train_cases, references, labels, run_dir: Path, reporter,
             should_stop=None) -> RunResult:
    """One run through exactly what ``finetune`` and ``predict`` run: ``run_finetune`` with the
    experiment's budget and seed (every other setting at its default), then ``predict_file`` with
    the model's own clean-up decisions and the default overlap, scored against each test case."""
    config = TrainConfig(**{**spec.train.to_dict(), "patch_size": tuple(spec.train.patch_size)})
    config.seed = spec.seed + repeat
    config.device = spec.device
    base = "none" if strategy == "scratch" and spec.base in ("none", "scratch") else spec.base
    fine = FinetuneSpec(base=base, cases=train_cases, labels=list(spec.labels), strategy=strategy,
                        output=str(run_dir / "model"), train=config, name=run_dir.name, patch_size=spec.patch_size)
    start = time.monotonic()
    result = run_finetune(fine, reporter=reporter, should_stop=should_stop, work_dir=str(run_dir / "work"))
    seconds = time.monotonic() - start
    card = ModelCard.load(result.model_dir)
    per_case = []
    cleaned: List[str] = []
    for case, ref in references:
        pred = predict_file(result.model_dir, _image_argument(case), run_dir / f"prediction_{_safe(ref.name)}.nii.gz",
                            device=spec.device)
        cleaned = pred.largest_component
        p = sitk.GetArrayFromImage(pred.labelmap).transpose(2, 1, 0)
        r = sitk.GetArrayFromImage(ref.label).transpose(2, 1, 0)
        metrics = compute_metrics(p, r, labels, ref.image.GetSpacing(), case=ref.name)
        per_case.append({"case": ref.name, "classes": [asdict(c) for c in metrics.classes]})
    return RunResult(strategy, size, repeat, fold, [c.name for c in train_cases], result.iterations, round(seconds, 1),
                     per_case, strategy_used=card.strategy or strategy, largest_component=list(cleaned))


def _image_argument(case: Case) -> Path:
    """The case's image as ``predict --image`` takes it (several channels: ``T1=a,T2=b`` or ``a,b``)."""
    if len(case.images) <= 1:
        return Path(case.image)
    names = list(case.channel_names or [])
    if len(names) == len(case.images):
        return Path(",".join(f"{n}={p}" for n, p in zip(names, case.images)))
    return Path(",".join(case.images))


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "case"


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_reports(spec: ExperimentSpec, results: Sequence[RunResult]) -> Dict[str, Path]:
    """results.csv (one row per run × case × class), summary.csv, plot PNG and report.md."""
    out = Path(spec.output)
    rows = []
    for r in results:
        for case in r.per_case:
            for c in case["classes"]:
                rows.append({
                    "strategy": r.strategy, "size": r.size, "repeat": r.repeat, "fold": r.fold,
                    "train_cases": "+".join(r.train_cases), "test_case": case["case"], "label": c["label"],
                    "dice": c["dice"], "iou": c["iou"], "hd95": _json_number(c["hd95"]),
                    "assd": _json_number(c["assd"]), "surface_dice": c["surface_dice"],
                    "iterations": r.iterations, "train_seconds": r.train_seconds,
                })
    csv_path = out / "results.csv"
    write_atomically(csv_path, _csv_writer(list(rows[0]) if rows else ["strategy"], rows))
    summary = summarize(rows)
    summary_path = out / "summary.csv"
    write_atomically(summary_path, _csv_writer(["strategy", "size", "n", "mean_dice", "std_dice", "min_dice",
                                                "max_dice"], summary))
    plot_path = out / "dice_vs_cases.png"
    _plot(summary, rows, plot_path, spec.name)
    report_path = out / "report.md"
    write_text_atomically(report_path, _report(spec, summary, results))
    return {"csv": csv_path, "summary": summary_path, "plot": plot_path, "report": report_path}


def _csv_writer(fieldnames: List[str], rows: List[Dict[str, Any]]) -> Callable[[Path], None]:
    """A ``paths.write_atomically`` writer for a CSV table (a report is never left half written)."""
    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
    return write


def summarize(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Mean/std/min/max Dice per strategy and size over repeats, folds, test cases and classes."""
    groups: Dict[tuple, List[float]] = {}
    for row in rows:
        groups.setdefault((row["strategy"], int(row["size"])), []).append(float(row["dice"]))
    summary = []
    for (strategy, size), values in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        arr = np.array(values)
        summary.append({"strategy": strategy, "size": size, "n": len(values), "mean_dice": round(float(arr.mean()), 4),
                        "std_dice": round(float(arr.std()), 4), "min_dice": round(float(arr.min()), 4),
                        "max_dice": round(float(arr.max()), 4)})
    return summary


def _plot(summary, rows, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    strategies = sorted({s["strategy"] for s in summary})
    for i, strategy in enumerate(strategies):
        pts = [s for s in summary if s["strategy"] == strategy]
        x = np.array([p["size"] for p in pts], float) + (i - len(strategies) / 2) * 0.04
        y = np.array([p["mean_dice"] for p in pts])
        err = np.array([p["std_dice"] for p in pts])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=strategy)
        raw = [r for r in rows if r["strategy"] == strategy]
        ax.scatter([float(r["size"]) + (i - len(strategies) / 2) * 0.04 for r in raw], [r["dice"] for r in raw], s=8, alpha=0.35)
    sizes = sorted({s["size"] for s in summary})
    if sizes:
        ax.set_xticks(sizes)
        ax.set_xlim(min(sizes) - 0.5, max(sizes) + 0.5)
    ax.set_xlabel("training cases")
    ax.set_ylabel("Dice (held-out)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomically(path, lambda temporary: fig.savefig(str(temporary), format="png"))
    plt.close(fig)


def _budget(config: TrainConfig) -> str:
    parts = []
    if config.iterations:
        parts.append(f"{config.iterations} iterations")
    if config.time_budget:
        parts.append(f"{config.time_budget:.0f} s")
    return " or ".join(parts)


def _report(spec: ExperimentSpec, summary, results: Sequence[RunResult]) -> str:
    lines = [f"# Experiment: {spec.name}", "",
             f"Target labels: {', '.join(spec.labels)}; base model: `{spec.base}`; budget per run: {_budget(spec.train)}; "
             f"repeats: {spec.repeats}; folds: {len(spec.folds())}.", "",
             "| strategy | training cases | Dice mean | std | min | max | n (case×class×repeat) |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['strategy']} | {s['size']} | {s['mean_dice']:.3f} | {s['std_dice']:.3f} | "
                     f"{s['min_dice']:.3f} | {s['max_dice']:.3f} | {s['n']} |")
    lines += ["", "![Dice vs training cases](dice_vs_cases.png)", "", "## Runs", "",
              "| fold | strategy | size | repeat | trained on | iterations | train s | largest component kept | mean Dice |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        strategy = r.strategy if r.strategy_used in ("", r.strategy) else f"{r.strategy} ({r.strategy_used})"
        lines.append(f"| {r.fold} | {strategy} | {r.size} | {r.repeat} | {', '.join(r.train_cases)} | {r.iterations} | "
                     f"{r.train_seconds:.0f} | {', '.join(r.largest_component) or 'none'} | {r.mean_dice:.3f} |")
    lines.append("")
    return "\n".join(lines)
