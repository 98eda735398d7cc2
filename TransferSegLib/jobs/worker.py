"""The worker: ``python -m TransferSegLib run-job DIR [--resume]`` (in Slicer: ``PythonSlicer -m ...``).

It turns a job folder's ``spec.json`` into a trained model, reporting every step
to ``events.jsonl`` and ending with ``state.json`` at ``finished``, ``cancelled``
or ``failed`` and an exit code (0, 3, 2 for an explained error, 1 for a crash).
What it adds to the engine is everything a background process needs:
- a stop request (the cancel file, SIGTERM or Ctrl-C) becomes the engine's
  ``should_stop``; the engine saves a checkpoint and ends as cancelled; a second
  signal stops at once;
- errors become an ``error`` event with the error type, the message and a hint;
- a CUDA out-of-memory retries with half the batch, then a smaller patch;
- one job per device (``lock.DeviceLock``).
The spec is read and checked before torch is imported, so a bad spec fails fast.
"""

import argparse
import os
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from TransferSegLib.errors import JobError, TrainingCancelled, TransferSegError
from TransferSegLib.jobs.events import EventWriter
from TransferSegLib.jobs.failures import describe_failure, is_out_of_memory
from TransferSegLib.jobs.layout import CANCEL, CHECKPOINTS, EVENTS, SPEC, now_iso
from TransferSegLib.jobs.lock import DeviceBusy, DeviceLock, lock_holder
from TransferSegLib.jobs.processes import pid_alive, process_created
from TransferSegLib.jobs.spec import JobSpec
from TransferSegLib.jobs.state import JobState, read_state, this_host, write_state

EXIT_FINISHED, EXIT_CRASHED, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 2, TrainingCancelled.exit_code
MAX_MEMORY_RETRIES = 4
QUEUE_POLL_S = 0.5  # how often a queued job looks whether its device is free


class StopRequest:
    """Whether the user asked the job to stop: a signal, or the cancel file (for shared folders and Windows)."""

    def __init__(self, job_dir: Path, check_every_s: float = 0.2):
        self.cancel_file = Path(job_dir) / CANCEL
        self.signalled = False
        self._check_every = check_every_s
        self._last_check = 0.0
        self._file_seen = False

    def install(self) -> None:
        for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self.signalled:
            # Second request: the user does not want to wait for the checkpoint.
            raise KeyboardInterrupt(f"stopped by a second signal {signum}")
        self.signalled = True

    def __call__(self) -> bool:
        if self.signalled or self._file_seen:
            return True
        now = time.monotonic()
        if now - self._last_check >= self._check_every:
            self._last_check = now
            self._file_seen = self.cancel_file.exists()
        return self._file_seen


class JobReporter:
    """The engine's reporter: events go to events.jsonl, with what the job layer adds."""

    def __init__(self, writer: EventWriter):
        self.writer = writer
        self.device: Optional[str] = None  # set once resolved: where peak GPU memory is read
        self.iteration: Optional[int] = None
        self.checkpoints: Dict[str, str] = {}
        self.last: Dict[str, Dict[str, Any]] = {}

    def event(self, kind: str, **fields: Any) -> None:
        if kind in ("progress", "finished"):
            peak = peak_gpu_memory_gb(self.device)
            if peak is not None:
                fields.setdefault("peak_gpu_memory_gb", peak)
        if "iteration" in fields and fields["iteration"] is not None:
            self.iteration = int(fields["iteration"])
        if kind == "checkpoint":
            self.checkpoints[str(fields.get("which", "last"))] = str(fields.get("path"))
        self.last[kind] = dict(fields)
        self.writer.event(kind, **fields)


class _ExperimentReporter:
    """Each run's events, except its own ``finished`` (the job finishes once, with the report)."""

    def __init__(self, inner: JobReporter):
        self.inner = inner

    def event(self, kind: str, **fields: Any) -> None:
        if kind != "finished":
            self.inner.event(kind, **fields)


def peak_gpu_memory_gb(device: Optional[str]) -> Optional[float]:
    """Peak GPU memory this process allocated on ``device`` (GiB), or None when it is not a CUDA device."""
    torch = sys.modules.get("torch")
    if torch is None or not device or not str(device).startswith("cuda") or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**30, 2)


# --- out-of-memory retries ---------------------------------------------------------------------

def smaller_settings(batch_size: int, patch: Tuple[int, ...], multiple: int = 8) -> Optional[Tuple[int, Tuple[int, ...]]]:
    """Half the batch first (same field of view), then 3/4 of the patch per axis; None when nothing is left to shrink."""
    if batch_size > 1:
        return batch_size // 2, tuple(patch)
    smaller = tuple(max(multiple, int(p * 0.75) // multiple * multiple) for p in patch)
    if smaller == tuple(patch):
        return None
    return 1, smaller


def run_with_memory_retries(
    run: Callable[[Any, bool], Any],
    finetune_spec: Any,
    reporter: JobReporter,
    resume: bool,
    on_change: Optional[Callable[[int, Tuple[int, ...]], None]] = None,
    max_retries: int = MAX_MEMORY_RETRIES,
) -> Any:
    """``run(finetune_spec, resume)``; on out-of-memory shrink batch/patch, say so, and try again.

    A retry continues from the checkpoint this run wrote, if it wrote one.
    """
    retries = 0
    while True:
        try:
            return run(finetune_spec, resume)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried, the rest re-raised
            if not is_out_of_memory(exc) or retries >= max_retries:
                raise
            config = finetune_spec.train
            patch = tuple(finetune_spec.patch_size or config.patch_size)
            smaller = smaller_settings(int(config.batch_size), patch)
            if smaller is None:
                raise
            retries += 1
            _free_gpu_memory()
            batch, new_patch = smaller
            where = "GPU memory" if "cuda" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError" else "memory"
            change = (f"batch size {config.batch_size} → {batch}" if batch != config.batch_size
                      else f"patch {'x'.join(map(str, patch))} → {'x'.join(map(str, new_patch))}")
            reporter.event(
                "warning",
                message=f"Out of {where} with batch size {config.batch_size} and patch {'x'.join(map(str, patch))}; "
                        f"retrying with {change} (attempt {retries + 1}).",
                retry=retries, batch_size=batch, patch_size=list(new_patch),
            )
            config.batch_size = batch
            finetune_spec.patch_size = new_patch
            if on_change is not None:
                on_change(batch, new_patch)
            resume = resume or "last" in reporter.checkpoints


def _free_gpu_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- the job ------------------------------------------------------------------------------------

class Worker:
    def __init__(self, job_dir: Path, resume: bool = False, stop: Optional[StopRequest] = None,
                 distributed: Any = None):
        self.job_dir = Path(job_dir).resolve()
        self.resume = resume
        self.stop = stop or StopRequest(self.job_dir)
        self.distributed = distributed  # a ddp.DistributedRun when started by torchrun
        self.writer = EventWriter(self.job_dir / EVENTS)
        self.reporter = JobReporter(self.writer)
        self.state = JobState()

    def _set_state(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.state, key, value)
        write_state(self.job_dir, self.state)

    def _begin(self) -> Optional[int]:
        """Claim the job folder; an exit code when it must not run (already running or finished)."""
        if not (self.job_dir / SPEC).is_file():
            print(f"error: '{self.job_dir}' is not a job folder: it has no {SPEC}.", file=sys.stderr)
            return EXIT_FAILED
        try:
            self.state = read_state(self.job_dir)
        except JobError:
            self.state = JobState()
        if self.state.state == "finished" and not self.resume:
            print(f"error: the job in '{self.job_dir}' has already finished; start a new job.", file=sys.stderr)
            return EXIT_FAILED
        if (self.state.state in ("running", "queued") and self.state.pid and self.state.pid != os.getpid()
                and self.state.host == this_host() and pid_alive(self.state.pid, self.state.pid_created)):
            print(f"error: the job in '{self.job_dir}' is already running (pid {self.state.pid}).", file=sys.stderr)
            return EXIT_FAILED
        self._set_state(
            state="running", pid=os.getpid(), host=this_host(), pid_created=process_created(os.getpid()),
            started=now_iso(), ended=None, exit_code=None, message="", error_type=None, hint="", stderr_tail=[],
        )
        print(f"TransferSeg worker pid {os.getpid()} on {this_host()}: job {self.job_dir} "
              f"(attempt {self.state.attempt}{', resuming' if self.resume else ''})", file=sys.stderr, flush=True)
        return None

    def _relay_warnings(self) -> Callable[[], None]:
        """Python warnings (e.g. an .mrc file's orientation) become ``warning`` events, so the front end shows
        them as the user's own terminal would; returns what puts the previous hook back."""
        previous = warnings.showwarning

        def relay(message, category, filename, lineno, file=None, line=None) -> None:
            self.writer.event("warning", message=" ".join(str(message).split()))

        warnings.showwarning = relay
        return lambda: setattr(warnings, "showwarning", previous)

    def _say_starting(self) -> None:
        """The first event, before torch is imported (that and reading the cases take seconds): a front
        end shows at once that the worker runs; ``torch_loaded`` records that it came first."""
        self.writer.event("info", phase="starting", pid=os.getpid(), torch_loaded="torch" in sys.modules,
                          message="Starting: loading PyTorch and the cases.")

    def run(self) -> int:
        refused = self._begin()
        if refused is not None:
            return refused
        lock: Optional[DeviceLock] = None
        restore_warnings = self._relay_warnings()
        try:
            self._say_starting()
            if self.stop():
                raise TrainingCancelled("Cancelled before training started.")
            spec = JobSpec.load(self.job_dir / SPEC)
            spec.check_inputs()
            finetune_spec = spec.to_finetune_spec() if spec.task == "finetune" else None  # imports torch
            from TransferSegLib.training.devices import resolve_device

            device = resolve_device(spec.device)
            if self.distributed is not None:
                device = self.distributed.device(device)
            lock = self._wait_for_device(str(device))
            self.state.device = self.reporter.device = str(device)
            write_state(self.job_dir, self.state)
            if spec.task == "experiment":
                return self._experiment(spec)
            result = self._train(spec, finetune_spec)
        except TrainingCancelled as exc:
            return self._cancelled(str(exc))
        except KeyboardInterrupt:
            return self._cancelled("Stopped at once by a second stop request; the last periodic checkpoint is kept.")
        except BaseException as exc:  # noqa: BLE001 - every failure must reach events.jsonl
            failure = describe_failure(exc)
            if failure.get("traceback"):
                traceback.print_exc()
            print(f"error: {failure['message']}", file=sys.stderr, flush=True)
            self._end(("error", failure), state="failed", message=failure["message"], error_type=failure["type"],
                      hint=failure["hint"], iteration=self.reporter.iteration,
                      exit_code=EXIT_FAILED if isinstance(exc, (TransferSegError, OSError)) else EXIT_CRASHED)
            return int(self.state.exit_code or EXIT_CRASHED)
        finally:
            restore_warnings()
            if lock is not None:
                lock.release()
            if self.distributed is not None:
                self.distributed.close()
        self._set_state(state="finished", model=str(result.model_dir), metrics=dict(result.metrics or {}),
                        iteration=int(result.iterations), peak_gpu_memory_gb=peak_gpu_memory_gb(self.state.device),
                        exit_code=EXIT_FINISHED, message=f"Model written to {result.model_dir}")
        return EXIT_FINISHED

    def _train(self, spec: JobSpec, finetune_spec: Any) -> Any:
        from TransferSegLib.training.finetune import run_finetune

        work_dir = self.job_dir / CHECKPOINTS
        resume = self.resume and (work_dir / "checkpoint_last.pt").is_file()
        if self.resume and not resume:
            self.reporter.event("warning", message="No checkpoint to resume from: training starts from the beginning.")
        should_stop: Callable[[], bool] = self.stop
        reporter: Any = self.reporter
        if self.distributed is not None:
            finetune_spec, work_dir, reporter, should_stop = self.distributed.adapt(
                finetune_spec, work_dir, self.reporter, self.stop)

        def remember(batch: int, patch: Tuple[int, ...]) -> None:
            spec.train.batch_size, spec.patch_size = batch, list(patch)
            spec.save(self.job_dir / SPEC)  # a later resume uses the settings that fit

        def run(fspec: Any, resume_now: bool) -> Any:
            return run_finetune(fspec, reporter=reporter, should_stop=should_stop, work_dir=str(work_dir), resume=resume_now)

        return run_with_memory_retries(run, finetune_spec, self.reporter, resume, on_change=remember)

    def _experiment(self, spec: JobSpec) -> int:
        """An experiment job: every run through the engine, a ``run`` event each, the report at the end.

        Called inside ``run``'s error handling, with the device locked; cancelling
        stops the current run (no result kept) and ``job resume`` redoes only what
        is not done.
        """
        from TransferSegLib.evaluation.experiment import run_experiment  # torch: after the stop handler is set

        experiment = spec.experiment
        assert experiment is not None  # JobSpec refuses an experiment job without one

        def on_run(result: Any, skipped: bool) -> None:
            self.writer.event("run", fold=result.fold, strategy=result.strategy, size=result.size,
                              repeat=result.repeat, mean_dice=round(float(result.mean_dice), 4),
                              train_seconds=result.train_seconds, skipped=skipped)

        results = run_experiment(experiment, reporter=_ExperimentReporter(self.reporter), on_run=on_run,
                                 should_stop=self.stop)
        report = Path(experiment.output) / "report.md"
        summary = {f"{r.strategy} n={r.size} f{r.fold} r{r.repeat}": round(float(r.mean_dice), 4) for r in results}
        self.writer.event("finished", model=str(report), report=str(report), runs=len(results), metrics=summary)
        self._set_state(state="finished", model=str(report), metrics=summary, exit_code=EXIT_FINISHED,
                        message=f"{len(results)} runs; report written to {report}")
        return EXIT_FINISHED

    def _cancelled(self, message: str) -> int:
        checkpoint = self.job_dir / CHECKPOINTS / "checkpoint_last.pt"
        fields: Dict[str, Any] = {"message": message, "iteration": self.reporter.iteration}
        if checkpoint.is_file():
            fields["checkpoint"] = str(checkpoint)
            fields["hint"] = f"Resume with 'transferseg job resume {self.job_dir}'."
        print(f"cancelled: {message}", file=sys.stderr, flush=True)
        self._end(("cancelled", fields), state="cancelled", message=message, iteration=self.reporter.iteration,
                  exit_code=EXIT_CANCELLED)
        return EXIT_CANCELLED

    def _end(self, event: Tuple[str, Dict[str, Any]], **changes: Any) -> None:
        """The end state first (what status, cancel and resume read), then its event.

        On a full disk the state still gets through (``write_state`` retries, then
        overwrites the old file in place); the event is the part that may be lost.
        """
        try:
            self._set_state(**changes)
        except (OSError, TransferSegError) as exc:
            print(f"error: cannot record the end of the job: {exc}", file=sys.stderr, flush=True)
        try:
            self.writer.event(event[0], **event[1])
        except OSError as exc:
            print(f"error: cannot add the '{event[0]}' event to {EVENTS}: {exc}", file=sys.stderr, flush=True)

    def _wait_for_device(self, device: str) -> DeviceLock:
        """The device's lock. While another job holds it this job is ``queued``: it waits, and a cancel ends it."""
        lock = DeviceLock(device, str(self.job_dir))
        queued = False
        while True:
            try:
                lock.acquire()
                break
            except DeviceBusy:
                if not queued:
                    queued = True
                    holder = lock_holder(device)
                    who = holder.describe() if holder is not None else "another job"
                    message = (f"Queued: the device '{device}' is busy ({who} is training on it); this job starts "
                               f"by itself when it is free. Cancel it to stop waiting.")
                    self._set_state(state="queued", message=message, device=device)
                    self.writer.event("queued", message=message, device=device)
                    print(message, file=sys.stderr, flush=True)
                if self.stop():
                    raise TrainingCancelled("Cancelled while queued for the device.") from None
                time.sleep(QUEUE_POLL_S)
        if queued:
            self._set_state(state="running", message="", started=now_iso())
        return lock


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m TransferSegLib run-job",
                                     description="Run a TransferSeg job folder (started by the command line or Slicer).")
    parser.add_argument("job_dir", help="job folder holding spec.json")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = parser.parse_args(argv)
    stop = StopRequest(Path(args.job_dir))
    stop.install()  # before anything slow, so an early cancel is not a crash
    distributed = None
    if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        from TransferSegLib.jobs.ddp import DistributedRun

        distributed = DistributedRun.from_environment(Path(args.job_dir))
        if not distributed.is_main:
            return distributed.run_follower(args.resume, stop)
    return Worker(Path(args.job_dir), resume=args.resume, stop=stop, distributed=distributed).run()
