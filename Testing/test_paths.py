"""Atomic writes: a file is replaced only by a complete one; failures name the path and keep the old file."""

import errno
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib import paths
from TransferSegLib.errors import OutputError
from TransferSegLib.file_integrity import IncompleteFile, check_complete
from TransferSegLib.models.folder_swap import (claim_output, previous_folder, recover_folder, replace_folder,
                                              staging_folder)
from TransferSegLib.paths import (check_outputs, temporary_sibling, write_atomically, write_group_atomically,
                                  write_text_atomically)
from security_fixtures import fill, remount_read_only, tiny_disk  # noqa: F401 - a fixture


def _gzip_writer(size: int):
    def write(temp: Path) -> None:
        with gzip.open(str(temp), "wb", compresslevel=0) as stream:
            stream.write(os.urandom(size))
    return write


def _failing(code: int, half: bytes = b"half a file"):
    def write(temp: Path) -> None:
        temp.write_bytes(half)
        raise OSError(code, os.strerror(code), str(temp))
    return write


def test_a_file_is_replaced_only_when_complete_and_no_temporary_stays(tmp_path):
    out = tmp_path / "result.json"
    write_text_atomically(out, '{"old": 1}')
    write_text_atomically(out, '{"new": 2}')
    assert json.loads(out.read_text()) == {"new": 2}
    assert os.listdir(tmp_path) == ["result.json"]
    assert temporary_sibling(out) != temporary_sibling(out)  # two writers never share a temporary name
    assert temporary_sibling(tmp_path / "a.nii.gz").name.endswith(".tmp.nii.gz")  # writers pick formats by suffix


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk is full"), (errno.EACCES, "no permission"),
                                         (errno.EROFS, "read-only"), (errno.EDQUOT, "quota")])
def test_injected_write_failures_keep_the_previous_file_and_say_why(tmp_path, code, words):
    out = tmp_path / "pred.dat.gz"
    write_atomically(out, _gzip_writer(1000))
    before = out.read_bytes()
    with pytest.raises(OutputError, match=words) as error:
        write_atomically(out, _failing(code))
    assert str(out) in str(error.value) and "unchanged" in str(error.value)
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["pred.dat.gz"]


def test_a_path_through_a_file_and_a_folder_as_output_are_clear_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        write_text_atomically(tmp_path / "notes.txt" / "pred.json", "{}")
    (tmp_path / "folder").mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        write_text_atomically(tmp_path / "folder", "{}")


def test_a_writer_that_reports_success_but_leaves_a_truncated_file_is_caught(tmp_path):
    out = tmp_path / "pred.nii.gz"
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkUInt8), str(out), True)
    before = out.read_bytes()

    def silently_truncated(temp: Path) -> None:
        sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 20, 20), np.uint8)), str(temp), True)
        data = temp.read_bytes()
        temp.write_bytes(data[: len(data) // 2])
    with pytest.raises(OutputError, match="did not complete.*gzip"):
        write_atomically(out, silently_truncated)
    assert out.read_bytes() == before


def test_a_real_full_disk_keeps_the_previous_file(tiny_disk):
    disk = tiny_disk
    out = disk / "pred.nii.gz"
    sitk.WriteImage(sitk.Image(16, 16, 16, sitk.sitkUInt8), str(out), True)
    before = out.read_bytes()
    fill(disk, leave_bytes=8192)
    rng = np.random.default_rng(0)
    noisy = sitk.GetImageFromArray(rng.integers(0, 255, (40, 40, 40), dtype=np.uint8))  # 64 KB, incompressible
    with pytest.raises(OutputError, match="disk is full") as error:
        write_atomically(out, lambda temp: sitk.WriteImage(noisy, str(temp), True))
    assert str(out) in str(error.value)
    assert out.read_bytes() == before and sorted(os.listdir(disk)) == ["filler.bin", "pred.nii.gz"]
    with pytest.raises(OutputError, match="disk is full"):
        write_atomically(disk / "big.gz", _gzip_writer(100_000))
    (disk / "filler.bin").unlink()
    remount_read_only(disk)
    with pytest.raises(OutputError, match="read-only"):
        write_text_atomically(disk / "new.json", "{}")
    assert out.read_bytes() == before


def test_files_that_belong_together_land_all_or_none(tmp_path, monkeypatch):
    label, probs = tmp_path / "pred.dat.gz", tmp_path / "probs.dat.gz"
    write_group_atomically([(label, _gzip_writer(100)), (probs, _gzip_writer(200))])
    before = label.read_bytes(), probs.read_bytes()
    with pytest.raises(OutputError, match="probs.dat.gz.*disk is full"):
        write_group_atomically([(label, _gzip_writer(300)), (probs, _failing(errno.ENOSPC))])
    assert (label.read_bytes(), probs.read_bytes()) == before
    real_replace = os.replace
    calls = []

    def second_rename_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error", dst)
        real_replace(src, dst)
    monkeypatch.setattr(paths.os, "replace", second_rename_fails)
    with pytest.raises(OutputError, match="probs.dat.gz"):
        write_group_atomically([(label, _gzip_writer(300)), (probs, _gzip_writer(400)),
                                (tmp_path / "new.dat.gz", _gzip_writer(10))])
    monkeypatch.undo()
    assert (label.read_bytes(), probs.read_bytes()) == before  # the first rename was rolled back
    assert sorted(os.listdir(tmp_path)) == ["pred.dat.gz", "probs.dat.gz"]
    with pytest.raises(OutputError, match="same file"):
        write_group_atomically([(label, _gzip_writer(1)), (tmp_path / "." / "pred.dat.gz", _gzip_writer(1))])


def test_incomplete_files_of_each_kind_are_recognized(tmp_path):
    image = sitk.GetImageFromArray(np.arange(4000, dtype=np.int16).reshape(10, 20, 20))
    for name in ("a.nii.gz", "a.nii", "a.nrrd", "a.seg.nrrd"):
        path = tmp_path / name
        sitk.WriteImage(image, str(path), name != "a.nii")
        check_complete(path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.8)])
        with pytest.raises(IncompleteFile):
            check_complete(path)
    (tmp_path / "w.pt").write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "s.json").write_text('{"state": "run')
    (tmp_path / "empty.txt").write_bytes(b"")
    for name in ("w.pt", "s.json", "empty.txt"):
        with pytest.raises(IncompleteFile):
            check_complete(tmp_path / name)


def test_an_output_that_is_an_input_or_holds_one_is_refused(tmp_path):
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"x")
    (tmp_path / "link.nii.gz").symlink_to(ct)
    with pytest.raises(OutputError, match="--output .* is the --image file"):
        check_outputs({"--output": ct}, {"--image": [ct]})
    with pytest.raises(OutputError, match="is the --image file"):
        check_outputs({"--output": tmp_path / "link.nii.gz"}, {"--image": [ct]})
    with pytest.raises(OutputError, match="would delete your input"):
        check_outputs({"--output": tmp_path}, {"--label": [ct]})
    with pytest.raises(OutputError, match="both name"):
        check_outputs({"--output": tmp_path / "p.nii.gz", "--probabilities": tmp_path / "p.nii.gz"}, {})
    check_outputs({"--output": tmp_path / "pred.nii.gz"}, {"--image": [ct]})


def test_a_folder_swap_interrupted_by_a_death_is_repaired_later(tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "model.json").write_text('{"v": 1}')
    # A process that died between the two renames: the user's folder sits under .previous only.
    os.replace(dest, previous_folder(dest))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.{int(dead.stdout)}-abc.partial"
    stale.mkdir()
    live = staging_folder(dest)  # ours: this process is alive
    assert "restored" in recover_folder(dest)
    assert json.loads((dest / "model.json").read_text()) == {"v": 1}
    assert not stale.exists() and live.is_dir() and not previous_folder(dest).exists()
    (live / "model.json").write_text('{"v": 2}')
    replace_folder(live, dest)
    assert json.loads((dest / "model.json").read_text()) == {"v": 2}
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_two_runs_for_one_output_are_refused_and_a_dead_runs_claim_is_taken_over(tmp_path):
    out = tmp_path / "model"
    with claim_output(out):
        with pytest.raises(OutputError, match="Another run .* is writing"):
            with claim_output(out):
                pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".model.writing").write_text(json.dumps({"pid": int(dead.stdout), "created": None}))
    with claim_output(out) as claimed:  # its owner is gone: taken over
        assert claimed == out
    assert os.listdir(tmp_path) == []
