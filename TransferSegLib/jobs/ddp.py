"""Several GPUs (or CPU processes) for one job, through PyTorch's own launcher.

``spec.processes > 1`` makes the front end start
``python -m torch.distributed.run --standalone --nproc-per-node N -m TransferSegLib run-job DIR``
instead of the worker itself; each process trains on its own patches and their
gradients are averaged before every optimizer step (the same all-reduce
DistributedDataParallel does, done at the step so that the engine's training
loop runs unchanged). Rank 0 is the job: it writes events, state, checkpoints
and the model; the other ranks keep their own checkpoints (for an exact resume)
in ``DIR/ddp/rank-K``.

What keeps the processes in lock step (a process that runs one iteration more
than the others would wait forever):
- the budget must be in iterations (wall-clock time differs between processes);
- a stop request is shared: every iteration the ranks agree whether to stop;
- the validation split is made once, with the job's seed, for all ranks;
- mixed precision is off (a loss-scale overflow on one GPU only would make that
  GPU skip a step the others take).
"""

import datetime
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from TransferSegLib.errors import JobError, TrainingCancelled
from TransferSegLib.jobs.layout import SPEC
from TransferSegLib.jobs.spec import JobSpec

FOLLOWER_SEED_STRIDE = 1000


def torchrun_command(job_dir: Path, processes: int, python: Optional[str] = None, resume: bool = False) -> List[str]:
    """The launcher command (``torchrun`` as a module, so it works with ``PythonSlicer`` too)."""
    command = [python or sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={int(processes)}", "-m", "TransferSegLib", "run-job", str(job_dir)]
    return command + (["--resume"] if resume else [])


def weights_fingerprint(state_dict: Any) -> str:
    """A hash of the weights: equal on every rank when the ranks trained in lock step."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode("utf-8"))
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _NullReporter:
    def event(self, kind: str, **fields: Any) -> None:
        pass


class DistributedRun:
    """This process's part of a ``torchrun`` job."""

    def __init__(self, job_dir: Path, rank: int, local_rank: int, world_size: int):
        self.job_dir = Path(job_dir).resolve()
        self.rank, self.local_rank, self.world_size = rank, local_rank, world_size
        self._hook = None
        self._synced_once = False
        self._dist = None

    @classmethod
    def from_environment(cls, job_dir: Path) -> "DistributedRun":
        run = cls(job_dir, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                  int(os.environ["WORLD_SIZE"]))
        return run

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- setup ------------------------------------------------------------------------------

    def device(self, resolved: Any) -> Any:
        """One GPU per process (``cuda:LOCAL_RANK``) for a CUDA job; the CPU stays the CPU."""
        import torch

        if resolved.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device(f"cuda:{self.local_rank}")
        return torch.device("cpu")

    def _init(self, device: Any) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        self._dist = dist

    def adapt(self, finetune_spec: Any, work_dir: Path, reporter: Any, stop: Callable[[], bool]
              ) -> Tuple[Any, Path, Any, Callable[[], bool]]:
        """This rank's spec, checkpoint folder, reporter and (shared) stop request."""
        import torch
        import torch.optim.optimizer as optim_hooks

        from TransferSegLib.training.devices import resolve_device

        config = finetune_spec.train
        if not config.iterations:
            raise JobError(
                f"Training on {self.world_size} processes needs a budget in iterations (--iterations N): "
                f"a wall-clock budget would end the processes at different iterations."
            )
        device = self.device(resolve_device(config.device))
        config.device = str(device)
        self._init(device)
        if config.time_budget is not None:
            reporter.event("warning", message=f"Several processes: the time budget is ignored, "
                                              f"training runs {config.iterations} iterations.")
            config.time_budget = None
        if config.amp and device.type == "cuda":
            reporter.event("warning", message="Several GPUs: mixed precision is off so that every GPU takes every step.")
        config.amp = False
        if not finetune_spec.val_cases and len(finetune_spec.cases) >= 3:
            from TransferSegLib.training.finetune import _split_validation

            finetune_spec.cases, finetune_spec.val_cases = _split_validation(finetune_spec.cases, config.seed)
        config.seed = int(config.seed) + FOLLOWER_SEED_STRIDE * self.rank  # each rank draws its own patches
        if not self.is_main:
            own = self.job_dir / "ddp" / f"rank-{self.rank}"
            own.mkdir(parents=True, exist_ok=True)
            finetune_spec.output = str(own / "model")
            work_dir = own / "checkpoints"
            reporter = _NullReporter()
        elif self.world_size > 1:
            reporter.event("info", message=f"Data-parallel training on {self.world_size} processes "
                                              f"({'GPUs' if device.type == 'cuda' else 'CPU'}); effective batch size "
                                              f"{config.batch_size * self.world_size}.")
        self._hook = optim_hooks.register_optimizer_step_pre_hook(self._average_gradients)
        device_for_flags = device

        def shared_stop() -> bool:
            flag = torch.tensor([1.0 if stop() else 0.0], device=device_for_flags)
            self._dist.all_reduce(flag, op=self._dist.ReduceOp.MAX)
            return bool(flag.item() > 0)

        return finetune_spec, work_dir, reporter, shared_stop

    # --- the synchronisation ------------------------------------------------------------------

    def _average_gradients(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Before each step: every rank gets the mean gradient (one flat all-reduce)."""
        import torch

        dist = self._dist
        params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        if not self._synced_once:
            # The new output channels were initialised per rank (each rank has its own seed):
            # start everyone from rank 0's weights.
            with torch.no_grad():
                for p in params:
                    dist.broadcast(p.data, src=0)
            self._synced_once = True
        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._dist is not None and self._dist.is_initialized():
            self._dist.destroy_process_group()

    # --- ranks other than 0 ---------------------------------------------------------------------

    def run_follower(self, resume: bool, stop: Callable[[], bool]) -> int:
        """Train as rank K: no events, no state; errors go to stderr (worker.log), torchrun ends the rest."""
        from TransferSegLib.training.finetune import run_finetune
        from TransferSegLib.training.devices import resolve_device
        from TransferSegLib.jobs.lock import DeviceLock

        lock = None
        try:
            spec = JobSpec.load(self.job_dir / SPEC)
            finetune_spec = spec.to_finetune_spec()
            device = self.device(resolve_device(spec.device))
            if device.type == "cuda":  # rank 0 holds its own GPU's lock; each rank holds its GPU's
                lock = DeviceLock(str(device), str(self.job_dir)).acquire()
            finetune_spec, work_dir, reporter, should_stop = self.adapt(
                finetune_spec, self.job_dir / "checkpoints", _NullReporter(), stop)
            resume_now = resume and (Path(work_dir) / "checkpoint_last.pt").is_file()
            result = run_finetune(finetune_spec, reporter=reporter, should_stop=should_stop,
                                  work_dir=str(work_dir), resume=resume_now)
            self._record_fingerprint(result.model_dir)
            return 0
        except TrainingCancelled:
            return 0
        finally:
            if lock is not None:
                lock.release()
            self.close()

    def _record_fingerprint(self, model_dir: Path) -> None:
        """Keep a hash of this rank's final weights (a check that the ranks agreed), not a second model."""
        import shutil

        import torch

        state = torch.load(Path(model_dir) / "model.pt", map_location="cpu", weights_only=True)
        own = Path(model_dir).parent
        (own / "fingerprint.json").write_text(json.dumps({"rank": self.rank, "sha256": weights_fingerprint(state)}))
        shutil.rmtree(model_dir, ignore_errors=True)
