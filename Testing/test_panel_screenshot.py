"""The screenshot in the docs is the real .ui in a realistic state (Utilities/panel_screenshot.py).

The script loads ``Resources/UI/TransferSeg.ui`` with PySide6 (Slicer's own widget
classes mapped to Qt stand-ins) and fills it from the real Logic on real MRML. Run
here into a temporary file: it must load, show the states it claims and make a PNG
of a panel's width; the picture in ``docs/screenshots/panel.png`` is what it wrote.
"""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "Utilities" / "panel_screenshot.py"
SHOT = ROOT / "docs" / "screenshots" / "panel.png"


def png_size(path: Path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_the_panel_renders_in_a_realistic_state(tmp_path):
    pytest.importorskip("PySide6")
    pytest.importorskip("slicer")
    output = tmp_path / "panel.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(SCRIPT), "--output", str(output)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    width, height = png_size(output)
    assert (width, height) == (report["width"], report["height"]) and width >= 400 and height > 1000
    shown = report["shown"]
    assert "Per class: liver 0.912, spleen 0.871" in shown["trainingStatusLabel"]  # a job training
    assert shown["caseCountLabel"] == "2 case(s), 1 for validation"  # cases listed
    assert "not trained on" in shown["validationNoteLabel"]
    assert png_size(SHOT)[0] == width, "docs/screenshots/panel.png is stale: run Utilities/panel_screenshot.py"
