"""Prediction memory grows with the volume, not with volume × classes."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = (256, 256, 120)  # 7.9 M voxels at 1 mm; the model sees 3 mm


def _prediction_peak(classes: int) -> int:
    """Bytes the prediction added to the peak resident set of a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, str(ROOT / "Testing" / "memory_probe.py"), str(classes)] + [str(s) for s in SIZE],
                         capture_output=True, text=True, env=env, timeout=900, check=True)
    before, after = (int(v) for v in out.stdout.split()[-2:])
    return after - before


def test_peak_memory_does_not_scale_with_the_class_count():
    two, many = _prediction_peak(2), _prediction_peak(29)
    voxels = SIZE[0] * SIZE[1] * SIZE[2]
    # Restoring every class onto the input grid as float32 would add 27 maps of the volume.
    class_scaling = 27 * voxels * 4
    assert many - two < 0.2 * class_scaling, (two, many, class_scaling)
    # and the whole prediction stays within a few copies of the input (int16 read, float32 work)
    assert many < 12 * voxels * 4, (many, voxels)
