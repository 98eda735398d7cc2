"""What the security and integrity tests share: tiny real images, and real disks that fail.

The disks are a tiny tmpfs that fills up or is remounted read-only. Mounting needs
root (CI containers and this development machine allow it); where it is refused
the tests that need a real full disk are skipped and the injected ``ENOSPC``
tests (which run everywhere) cover the same code paths.
"""

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import SimpleITK as sitk

#: A real MONAI network small enough to build and run in a fraction of a second.
TINY_NETWORK = {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                "features": [4, 4, 8, 8, 16, 4]}


def write_ct(path: Path, shape=(16, 16, 16), dtype=np.float32) -> Path:
    """A noise image (CT-like values) at ``path``."""
    rng = np.random.default_rng(0)
    sitk.WriteImage(sitk.GetImageFromArray(rng.normal(0, 50, shape).astype(dtype)), str(path))
    return path


def write_label(path: Path, shape=(16, 16, 16)) -> Path:
    """A labelmap with one cube of label 1 at ``path``."""
    array = np.zeros(shape, np.uint8)
    array[4:12, 4:12, 4:12] = 1
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def _mount(folder: Path, size_kib: int) -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    return done.returncode == 0


@contextlib.contextmanager
def small_disk(size_kib: int = 256) -> Iterator[Path]:
    """A folder on a tmpfs of ``size_kib`` KiB (raises ``OSError`` if it cannot be mounted)."""
    folder = Path(tempfile.mkdtemp(prefix="transferseg-small-disk-"))
    try:
        if not _mount(folder, size_kib):
            raise OSError("cannot mount a tmpfs here")
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    finally:
        with contextlib.suppress(OSError):
            folder.rmdir()


def fill(folder: Path, leave_bytes: int = 0) -> None:
    """Fill the disk holding ``folder`` until at most ``leave_bytes`` remain free."""
    with open(folder / "filler.bin", "wb") as stream:
        while True:
            stats = os.statvfs(str(folder))
            free = stats.f_bavail * stats.f_frsize
            if free <= leave_bytes:
                break
            try:
                stream.write(b"\0" * max(1, min(1 << 20 if free > 2 << 20 else 4096, free - leave_bytes)))
                stream.flush()
            except OSError:
                break


def remount_read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)


def _disk_or_skip(size_kib: int):
    try:
        context = small_disk(size_kib)
        disk = context.__enter__()
    except OSError:
        pytest.skip("no tmpfs can be mounted here; the injected failure tests cover this")
    try:
        yield disk
    finally:
        context.__exit__(None, None, None)


@pytest.fixture()
def tiny_disk():
    """A 512 KiB tmpfs folder, or the test is skipped where none can be mounted."""
    yield from _disk_or_skip(512)


@pytest.fixture()
def job_disk():
    """A 96 MiB tmpfs folder (room for a small job's checkpoints, about 20 MB each, twice over), or a skip."""
    yield from _disk_or_skip(96 * 1024)
