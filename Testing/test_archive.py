"""Safe extraction: malicious archives are refused and leave nothing behind."""

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from TransferSegLib.models.archive import safe_extract
from TransferSegLib.errors import DownloadError


def _zip(path: Path, members) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _tar(path: Path, members, mode: str = "w:gz") -> Path:
    """``members``: (name, data) for files, or ready TarInfo objects for anything else."""
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _nothing_left(tmp_path: Path, archive: Path) -> bool:
    return sorted(p.name for p in tmp_path.iterdir()) == [archive.name]


def test_zip_bundle_is_extracted_with_its_folders(tmp_path):
    archive = _zip(tmp_path / "bundle.zip", [("spleen/configs/inference.json", b"{}"),
                                              ("spleen/models/model.pt", b"weights")])
    files = safe_extract(archive, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in files) == [
        "spleen/configs/inference.json", "spleen/models/model.pt"]
    assert (tmp_path / "out" / "spleen" / "models" / "model.pt").read_bytes() == b"weights"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_tar_gz_is_recognized_by_content_and_keeps_inside_links(tmp_path):
    archive = _tar(tmp_path / "model.download", [("m/model.pt", b"w"), _link("m/latest.pt", "model.pt"),
                                                  _link("m/copy.pt", "m/model.pt", tarfile.LNKTYPE)])
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "m" / "latest.pt").is_symlink()
    assert (tmp_path / "out" / "m" / "latest.pt").read_bytes() == b"w"
    assert (tmp_path / "out" / "m" / "copy.pt").read_bytes() == b"w"


@pytest.mark.parametrize("name, why", [
    ("/etc/evil", "absolute"),
    ("../evil", "'..'"),
    ("ok/../../evil", "'..'"),
    ("..\\evil", "'..'"),
])
def test_zip_members_escaping_the_folder_are_refused(tmp_path, name, why):
    archive = _zip(tmp_path / "bad.zip", [("fine.txt", b"x"), (name, b"pwned")])
    with pytest.raises(DownloadError) as info:
        safe_extract(archive, tmp_path / "out")
    assert why in str(info.value) and str(archive) in str(info.value) and name in str(info.value)
    assert _nothing_left(tmp_path, archive)
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("member", [
    _link("link", "/etc/passwd"),
    _link("sub/link", "../../outside"),
    _link("hard", "/etc/passwd", tarfile.LNKTYPE),
    _link("hard", "../outside", tarfile.LNKTYPE),
])
def test_links_pointing_outside_are_refused(tmp_path, member):
    archive = _tar(tmp_path / "bad.tar.gz", [("sub/a.txt", b"a"), member])
    with pytest.raises(DownloadError, match=member.name):
        safe_extract(archive, tmp_path / "out")
    assert _nothing_left(tmp_path, archive)


def test_chain_of_links_that_each_look_inside_is_refused(tmp_path):
    # "up" points to "here"/.., and "here" is the folder itself: together they leave it.
    archive = _tar(tmp_path / "chain.tar", [_link("up", "here/.."), _link("here", ".")], mode="w")
    with pytest.raises(DownloadError, match="resolving outside"):
        safe_extract(archive, tmp_path / "out")
    assert _nothing_left(tmp_path, archive)


def test_files_written_through_a_link_are_refused(tmp_path):
    archive = _tar(tmp_path / "through.tar", [_link("docs", "."), ("docs/readme.txt", b"x")], mode="w")
    with pytest.raises(DownloadError, match="through a link"):
        safe_extract(archive, tmp_path / "out")


def test_device_files_are_refused(tmp_path):
    device = tarfile.TarInfo("dev/sda")
    device.type = tarfile.BLKTYPE
    archive = _tar(tmp_path / "dev.tar", [device], mode="w")
    with pytest.raises(DownloadError, match="device"):
        safe_extract(archive, tmp_path / "out")
    assert _nothing_left(tmp_path, archive)


def test_zip_symlink_outside_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("escape")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../etc")
    with pytest.raises(DownloadError, match="outside"):
        safe_extract(archive, tmp_path / "out")


def test_zip_bomb_over_the_declared_limit_is_refused_before_writing(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", [("a.bin", b"\0" * 600_000), ("b.bin", b"\0" * 600_000)])
    assert archive.stat().st_size < 10_000
    with pytest.raises(DownloadError, match="b.bin"):
        safe_extract(archive, tmp_path / "out", max_total_bytes=1_000_000)
    assert _nothing_left(tmp_path, archive)


def test_zip_whose_declared_size_lies_is_refused_and_leaves_nothing(tmp_path):
    archive = _zip(tmp_path / "liar.zip", [("a.bin", b"\0" * 600_000)])
    data = bytearray(archive.read_bytes())
    # Patch the uncompressed size in the central directory to claim 10 bytes.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = (10).to_bytes(4, "little")
    local = data.find(b"PK\x03\x04")
    data[local + 22:local + 26] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="damaged|size limit"):
        safe_extract(archive, tmp_path / "out", max_total_bytes=1000)
    assert _nothing_left(tmp_path, archive)


def test_too_many_entries_are_refused(tmp_path):
    archive = _zip(tmp_path / "many.zip", [(f"f{i}.txt", b"") for i in range(6)])
    with pytest.raises(DownloadError, match="limit of 5 entries"):
        safe_extract(archive, tmp_path / "out", max_files=5)


def test_existing_destination_is_not_overwritten(tmp_path):
    archive = _zip(tmp_path / "a.zip", [("f.txt", b"new")])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f.txt").write_bytes(b"old")
    with pytest.raises(DownloadError, match="already exists"):
        safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "f.txt").read_bytes() == b"old"


def test_not_an_archive_is_explained(tmp_path):
    page = tmp_path / "model.zip"
    page.write_text("<html>Please log in</html>")
    with pytest.raises(DownloadError, match="neither a zip nor a tar"):
        safe_extract(page, tmp_path / "out")


def test_damaged_archive_leaves_nothing_behind(tmp_path):
    archive = _zip(tmp_path / "a.zip", [("a.bin", os.urandom(50_000))])
    data = bytearray(archive.read_bytes())
    data[100:200] = b"\0" * 100  # inside the compressed data of a.bin
    archive.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="damaged"):
        safe_extract(archive, tmp_path / "out")
    assert _nothing_left(tmp_path, archive)
