"""Training batches made ahead of the loop, then moved to the device and augmented there.

Patch sampling (numpy slicing of the prepared cases) runs in background threads a
few iterations ahead, through a bounded queue, so the device does not wait for
the CPU. The batch goes to the device before augmentation and is augmented there
(rotations, scaling, noise: cheap on a GPU, ~125 ms an iteration at 128³ on two CPU
cores). On a CPU-only run the augmentation is done by the background threads too.

Determinism: batch ``i`` is drawn from generators seeded by ``(seed, i)`` only, so
it is the same whichever thread makes it and however far ahead, and a run resumed
at iteration ``k`` draws exactly the batches an uninterrupted run draws from ``k``.

``wait_s`` of each batch is the time the training loop spent waiting for it (queue
plus transfer plus augmentation launched on the device): the loop reports its share
of the step time as ``data_wait_pct``.
"""

import collections
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Deque, List, Optional, Sequence, Tuple

import numpy as np
import torch

from TransferSegLib.training.augment import AugmentConfig, augment_batch
from TransferSegLib.training.sampling import PreparedCase, sample_batch

DEFAULT_WORKERS = 2
DEFAULT_DEPTH = 4


@dataclass
class Batch:
    """One training batch on the device: images ``(B, 1, X, Y, Z)``, labels and region
    masks ``(B, X, Y, Z)``, annotated classes ``(B, C)``."""

    images: torch.Tensor
    labels: torch.Tensor
    regions: torch.Tensor
    annotated: torch.Tensor
    iteration: int
    wait_s: float


def batch_rng(seed: int, iteration: int) -> np.random.Generator:
    """The patch sampler's generator for one iteration."""
    return np.random.default_rng([int(seed) % 2**32, int(iteration)])


def augment_generators(seed: int, iteration: int, device: torch.device) -> Tuple[torch.Generator, Optional[torch.Generator]]:
    """The augmentation's generators for one iteration: the CPU one for its scalar draws,
    and on a GPU one there for the noise field."""
    draws, noise = np.random.SeedSequence([int(seed) % 2**32, int(iteration), 1]).generate_state(2, np.uint64)
    cpu = torch.Generator().manual_seed(int(draws) % 2**63)
    on_device = torch.Generator(device=device).manual_seed(int(noise) % 2**63) if device.type != "cpu" else None
    return cpu, on_device


Arrays = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class BatchSource:
    """Batches for iterations ``start, start + 1, ...``, prepared ``depth`` ahead by ``workers`` threads."""

    def __init__(self, cases: List[PreparedCase], patch_size: Sequence[int], batch_size: int, foreground_ratio: float,
                 seed: int, device: torch.device, augment: Optional[AugmentConfig], start: int = 0,
                 workers: int = DEFAULT_WORKERS, depth: int = DEFAULT_DEPTH):
        self.cases = cases
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = int(batch_size)
        self.foreground_ratio = float(foreground_ratio)
        self.seed = int(seed)
        self.device = device
        self.augment = augment
        self.augment_in_workers = device.type == "cpu"
        self.next_iteration = int(start)
        self.depth = max(1, int(depth))
        self.pool: Optional[ThreadPoolExecutor] = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="transferseg-batches") if workers > 0 else None)
        self.pending: Deque[Tuple[int, Future]] = collections.deque()
        self._fill()

    def make(self, iteration: int) -> Arrays:
        """The host-side work for one iteration: sample (and, on a CPU run, augment)."""
        images, labels, regions, annotated = sample_batch(
            self.cases, self.patch_size, self.batch_size, batch_rng(self.seed, iteration), self.foreground_ratio)
        x, y, r, a = (torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(regions),
                      torch.from_numpy(annotated))
        if self.augment is not None and self.augment_in_workers:
            x, y, r = augment_batch(x, y, r, self.augment, *augment_generators(self.seed, iteration, x.device))
        if self.device.type == "cuda":
            x, y, r, a = (t.pin_memory() for t in (x, y, r, a))
        return x, y, r, a

    def _fill(self) -> None:
        while self.pool is not None and len(self.pending) < self.depth:
            iteration = self.next_iteration + len(self.pending)
            self.pending.append((iteration, self.pool.submit(self.make, iteration)))

    def next(self) -> Batch:
        """The batch of the next iteration, on the device."""
        t0 = time.perf_counter()
        iteration = self.next_iteration
        if self.pool is None:
            arrays = self.make(iteration)
        else:
            queued, future = self.pending.popleft()
            assert queued == iteration
            arrays = future.result()
        self.next_iteration += 1
        self._fill()
        x, y, r, a = (t.to(self.device, non_blocking=True) for t in arrays)
        if self.augment is not None and not self.augment_in_workers:
            x, y, r = augment_batch(x, y, r, self.augment, *augment_generators(self.seed, iteration, self.device))
        return Batch(x, y, r, a, iteration, time.perf_counter() - t0)

    def close(self) -> None:
        if self.pool is not None:
            for _, future in self.pending:
                future.cancel()
            self.pool.shutdown(wait=True)
            self.pool = None
        self.pending.clear()

    def __enter__(self) -> "BatchSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WaitShare:
    """The share of recent step time spent waiting for data (percent)."""

    def __init__(self, window: int = 20):
        self.steps: Deque[Tuple[float, float]] = collections.deque(maxlen=window)

    def add(self, wait_s: float, step_s: float) -> None:
        self.steps.append((wait_s, step_s))

    @property
    def percent(self) -> Optional[float]:
        total = sum(s for _, s in self.steps)
        return round(100.0 * sum(w for w, _ in self.steps) / total, 1) if total > 0 else None
