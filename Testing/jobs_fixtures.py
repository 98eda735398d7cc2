"""Tiny real cases and helpers for the job-layer tests (real worker processes on the CPU)."""

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from TransferSegLib.jobs.spec import JobSpec

#: Fast on two loaded CPU cores: one thread, batch 1, 16³ patches, no augmentation, no
#: validation until the end.
TINY_TRAIN = dict(batch_size=1, time_budget=None, val_every=100000, patience=0, augment=False,
                  num_threads=1, checkpoint_every=100000, progress_every=0.2)


def write_tiny_cases(folder: Path, n: int = 2, size: int = 24) -> List[Tuple[str, str]]:
    """``n`` synthetic CT-like cases (a bright block on noise) with their labelmaps."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        image = rng.normal(0, 30, (size, size, size)).astype(np.float32)
        label = np.zeros(image.shape, np.uint8)
        label[6:18, 5 + i:17 + i, 6:16] = 1
        image[label == 1] += 120
        paths = []
        for array, name in ((image, f"case{i}_img.nii.gz"), (label, f"case{i}_lab.nii.gz")):
            volume = sitk.GetImageFromArray(array)
            volume.SetSpacing((3.0, 3.0, 3.0))
            sitk.WriteImage(volume, str(folder / name))
            paths.append(str(folder / name))
        pairs.append((paths[0], paths[1]))
    return pairs


def tiny_spec(cases: List[Tuple[str, str]], output: Path, iterations: int = 20, **train: Any) -> JobSpec:
    settings: Dict[str, Any] = dict(TINY_TRAIN, iterations=iterations)
    settings.update(train)
    return JobSpec(base="none", strategy="scratch", labels=["blob"], output=str(output), device="cpu", seed=0,
                   cases=[{"image": i, "label": l, "label_names": {1: "blob"}} for i, l in cases],
                   train=settings, patch_size=[16, 16, 16])


def wait_for_event(job, predicate: Callable[[Dict[str, Any]], bool], timeout: float = 180.0,
                   seen: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Poll ``job`` like a GUI timer until an event matches; fails on a job that ends first."""
    seen = seen if seen is not None else []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in job.poll():
            seen.append(event)
            if predicate(event):
                return event
        status = job.status()
        if status.terminal:
            seen.extend(job.poll())
            raise AssertionError(f"job ended ({status.state}: {status.message}) before the awaited event; events: {seen}")
        time.sleep(0.05)
    raise AssertionError(f"no matching event within {timeout} s; events so far: {seen}")


def stop_jobs(jobs: List[Any]) -> None:
    """Leave no worker behind, whatever a test did."""
    for job in jobs:
        try:
            job.kill()
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass
