"""What the terminal shows: one-line warnings, info lines, tables that never cut a word, model cards."""

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.cli import main
from TransferSegLib.commands.tables import format_table
from TransferSegLib.jobs.state import JobState, write_state
from TransferSegLib.progress import ProgressPrinter

TS = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "TotalSegmentator"


def test_the_warning_hook_prints_one_line_without_source(capsys):
    from TransferSegLib.cli import _one_line_warning

    _one_line_warning(UserWarning("'x.mrc': no orientation in the header;\n  assuming RAS"), UserWarning, "/a/b.py", 7)
    assert capsys.readouterr().err == "warning: 'x.mrc': no orientation in the header; assuming RAS\n"


def test_log_records_are_one_line_too():
    import logging

    from TransferSegLib.cli import _LevelPrefix

    record = logging.LogRecord("TransferSegLib", logging.WARNING, "x.py", 1,
                               "the model catalog is not available;\n showing local models", None, None)
    assert _LevelPrefix().format(record) == "warning: the model catalog is not available; showing local models"


def test_info_events_are_plain_lines_and_warnings_one_line():
    stream = io.StringIO()
    printer = ProgressPrinter(stream)
    printer.show({"kind": "info", "message": "Resumed from iteration 28 (checkpoint_last.pt)."})
    printer.show({"kind": "warning", "message": "two\nlines"})
    assert stream.getvalue() == "Resumed from iteration 28 (checkpoint_last.pt).\nwarning: two lines\n"


def test_tables_have_headers_and_wrap_the_last_column_at_spaces():
    rows = [["finished", "20260101-a", "Model written to /data/models/liver with a long explanation here"],
            ["failed", "20260101-b", "Labelmap 'x.nii.gz' contains label values that --labels did not name"]]
    text = format_table(["STATE", "JOB", "MESSAGE"], rows, width=60)
    lines = text.splitlines()
    assert lines[0].split() == ["STATE", "JOB", "MESSAGE"] and all(len(line) <= 60 for line in lines)
    words = " ".join(line[lines[0].index("MESSAGE"):].strip() for line in lines[1:]).split()
    assert "explanation" in words and "--labels" in words  # no word cut
    assert format_table(["A", "B"], [["x", "a b c"]]).splitlines()[1] == "x  a b c"


def test_job_list_shows_a_header_and_whole_messages(tmp_path, capsys):
    folder = tmp_path / "jobs" / "20260101-120000-abcdef"
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text("{}")
    message = "Labelmap 'seg.nii.gz' contains label values [2, 3] that --labels did not name: select by value"
    write_state(folder, JobState(state="failed", message=message, iteration=28))
    assert main(["job", "list", "--root", str(tmp_path / "jobs")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["STATE", "JOB", "PROGRESS"] and message in out and "it 28" in out


def test_models_list_names_default_and_none_and_show_prints_a_card(capsys):
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "SOURCE"]
    assert lines[1].startswith("default ") and lines[2].startswith("none ")
    assert main(["models", "show", "default"]) == 0
    card = capsys.readouterr().out
    for words in ("classes", "28: spleen", "license", "recipe", "orientation RAS", "training", "validation"):
        assert words in card
    assert main(["models", "show", "default", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["labels"][0] == "background"
    assert main(["models", "show", "none"]) == 0 and "random" in capsys.readouterr().out


def test_predict_with_a_base_model_itself_and_its_warning_on_one_line(tmp_path, capsys):
    """`predict --model default` runs the shipped base as it is, on a crop of the sample CT stored as .mrc
    (a format without orientation: the reader's warning reaches the terminal as one 'warning:' line)."""
    import mrcfile

    image = sitk.ReadImage(str(TS / "example_ct_sm.nii.gz"))[30:94, 20:84, :]
    path = tmp_path / "crop.mrc"
    with mrcfile.new(str(path)) as mrc:
        mrc.set_data(sitk.GetArrayFromImage(image).astype(np.float32))
        mrc.voxel_size = 3.0
    out = tmp_path / "organs.seg.nrrd"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["predict", "--model", "default", "--image", str(path), "--output", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "28 labels: spleen" in captured.out
    shown = [int(line.split("(")[1].split("%")[0]) for line in captured.out.splitlines()
             if line.startswith("sliding window (")]
    assert shown and shown == sorted(set(shown)) and shown[-1] == 100  # progress, in order, to the end
    lines = [line for line in captured.err.splitlines() if "MRC" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: '") and "UserWarning" not in captured.err
    written = sitk.ReadImage(str(out))
    assert written.GetSize() == image.GetSize() and written.GetMetaData("Segment0_Name") == "spleen"
    assert main(["predict", "--model", "medicalnet_resnet10", "--image", str(path), "--output", str(out)]) == 2
    assert "no segmentation head" in capsys.readouterr().err
