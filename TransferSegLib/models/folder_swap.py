"""Folders written whole (model folders): checked before a run, claimed during it, swapped in when complete.

A model folder is replaced as a unit: the new one is built in a hidden staging
folder beside it and renamed in, the previous one set aside as ``.NAME.previous``
for the instant between the two renames. A death in that instant is repaired by
the next save or load (``recover_folder``); staging folders of dead processes
are removed. Files inside are written with ``paths.write_atomically``.
"""

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional

from TransferSegLib.errors import OutputError
from TransferSegLib.jobs.processes import pid_alive, process_created
from TransferSegLib.paths import PathLike, check_outputs, fsync_path, make_parent, output_error, remove_quietly


def check_folder_output(option: str, output: PathLike, inputs: Dict[str, Iterable[PathLike]], marker: str) -> Path:
    """Before any work: can a folder (recognized by the file ``marker``) be written at ``output``?

    Refused: an existing file, an existing non-empty folder that is not one of ours
    (its files would be deleted by the swap), a folder that holds an input, and a
    place where nothing can be created (read-only, no permission, a path through
    a file): the last is tried for real, with a staging folder made and removed.
    """
    out = Path(output).expanduser().absolute()
    if out.is_file():
        raise OutputError(f"{option} '{out}' is a file; give a folder name for the model (it is created).")
    if out.is_dir() and not (out / marker).is_file() and any(out.iterdir()):
        raise OutputError(f"{option} '{out}' is a folder that is not a TransferSeg model (it has no {marker}); "
                          f"refusing to replace it and its files. Choose another {option}.")
    check_outputs({option: out}, inputs)
    make_parent(out)
    try:
        os.rmdir(staging_folder(out))
    except OSError as exc:
        raise output_error(out, exc) from exc
    return out


@contextlib.contextmanager
def claim_output(output: PathLike) -> Iterator[Path]:
    """Held while a run will write ``output``: a second run for the same place is refused, not interleaved.

    The claim is a file ``.NAME.writing`` created exclusively beside ``output``,
    naming the process; one whose process is gone is taken over.
    """
    out = Path(output).expanduser().absolute()
    claim = out.with_name(f".{out.name}.writing")
    record = json.dumps({"pid": os.getpid(), "created": process_created(os.getpid())})
    for _ in range(3):
        try:
            fd = os.open(str(claim), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(claim.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                holder = {}
            if pid_alive(holder.get("pid"), holder.get("created")):
                raise OutputError(f"Another run (pid {holder.get('pid')}) is writing '{out}'. Wait for it to "
                                  f"finish, cancel it, or choose another output.") from None
            remove_quietly(claim)  # its process is gone
            continue
        except OSError as exc:
            raise output_error(out, exc) from exc
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(record)
        break
    else:
        raise OutputError(f"Cannot claim '{out}': the claim file '{claim}' keeps changing. Try again.")
    try:
        yield out
    finally:
        remove_quietly(claim)


def staging_folder(dest: PathLike) -> Path:
    """A new hidden folder beside ``dest`` to build its replacement in (named with this process's pid)."""
    dest = Path(dest)
    folder = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}-", suffix=".partial", dir=str(dest.parent)))
    os.chmod(folder, 0o755)  # mkdtemp makes it private; a model folder is meant to be shared
    return folder


def previous_folder(dest: PathLike) -> Path:
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.previous")


def recover_folder(dest: PathLike, stale_after_s: float = 86400.0) -> Optional[str]:
    """Repair what a death during ``replace_folder`` left: returns what was done, or None.

    Died between its two renames: ``dest`` is missing and ``.NAME.previous`` holds
    the user's previous folder, which is put back. Died after them: the leftover
    ``.previous`` is removed. Staging folders of processes that no longer run are removed.
    """
    dest = Path(dest)
    done = None
    backup = previous_folder(dest)
    if backup.is_dir():
        if not dest.exists():
            os.replace(str(backup), str(dest))
            done = f"restored the previous '{dest.name}' from an interrupted replacement"
        else:
            shutil.rmtree(str(backup), ignore_errors=True)
    if dest.parent.is_dir():
        for partial in dest.parent.glob(f".{dest.name}.*.partial"):
            owner = partial.name[len(dest.name) + 2:].split("-", 1)[0]
            alive = pid_alive(int(owner)) if owner.isdigit() else time.time() - partial.stat().st_mtime < stale_after_s
            if not alive:
                shutil.rmtree(str(partial), ignore_errors=True)
    return done


def replace_folder(staged: PathLike, dest: PathLike) -> None:
    """Swap the complete folder ``staged`` in at ``dest``; a death at any point is repaired by ``recover_folder``."""
    staged, dest = Path(staged), Path(dest)
    recover_folder(dest)
    backup = previous_folder(dest)
    try:
        if dest.exists():
            os.replace(str(dest), str(backup))
        os.replace(str(staged), str(dest))
    except OSError as exc:
        if backup.is_dir() and not dest.exists():
            os.replace(str(backup), str(dest))
        raise output_error(dest, exc) from exc
    shutil.rmtree(str(backup), ignore_errors=True)
    fsync_path(dest.parent, directory=True)
