"""How soon a started job says something: seconds from ``start_job`` to its first event and to ``started``.

Usage: python bench/bench_job_start.py [--base default] [--repeats 3] [--device cpu]

Starts a real fine-tuning job the way the Slicer panel does (``jobs.api.start_job``,
a worker process), on the shipped sample CT (liver and spleen of
``example_ct_sm.nii.gz``), follows ``events.jsonl`` the way the panel polls it, and
cancels the job once ``started`` arrived. This process never imports torch (as
Slicer's own process must not). Prints one line per repeat and the medians; the
first event's ``torch_loaded`` field says whether the worker had imported torch
when it wrote it. Record the figures in docs/benchmarks.md with the command.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from TransferSegLib.data.sample_data import sample_cases  # noqa: E402
from TransferSegLib.jobs.api import start_job  # noqa: E402


def one_job(base: str, device: str, work: Path) -> Dict[str, Optional[float]]:
    case = sample_cases()["ts_ct"]
    spec = {"base": base, "strategy": "last-layers", "labels": ["liver", "spleen"], "device": device, "seed": 0,
            "output": str(work / "model"),
            "cases": [{"image": case.image, "label": case.label, "label_names": dict(case.label_names)}],
            "train": {"iterations": 100000, "time_budget": None, "num_threads": 1, "progress_every": 1.0}}
    t0 = time.time()
    job = start_job(spec, work / "job")
    first: Optional[float] = None
    first_kind, torch_loaded = "", None
    started: Optional[float] = None
    try:
        deadline = time.monotonic() + 600
        while started is None and time.monotonic() < deadline:
            for event in job.poll():
                if first is None:
                    first, first_kind, torch_loaded = event["time"] - t0, event["kind"], event.get("torch_loaded")
                if event["kind"] == "started":
                    started = event["time"] - t0
                if event["kind"] in ("error", "finished", "cancelled"):
                    raise SystemExit(f"the job ended ({event['kind']}): {event.get('message')}")
            time.sleep(0.01)
    finally:
        job.cancel(timeout=60)
    return {"first": first, "started": started, "kind": first_kind, "torch_loaded": torch_loaded}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="default", help="base model of the job (default: the shipped default model)")
    p.add_argument("--device", default="cpu", help="device of the job (default cpu)")
    p.add_argument("--repeats", type=int, default=3, help="jobs to start, one after the other (default 3)")
    args = p.parse_args()
    firsts, starteds = [], []
    for n in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="transferseg-job-start-"))
        try:
            r = one_job(args.base, args.device, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"job {n + 1}: first event after {r['first']:.2f} s (kind {r['kind']}, torch_loaded {r['torch_loaded']}), "
              f"started after {r['started']:.2f} s", flush=True)
        firsts.append(r["first"])
        starteds.append(r["started"])
    print(f"median over {args.repeats}: first_event_s={statistics.median(firsts):.2f} "
          f"started_s={statistics.median(starteds):.2f} (base {args.base}, device {args.device})")


if __name__ == "__main__":
    main()
