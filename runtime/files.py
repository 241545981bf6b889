"""Safe file writing: outputs appear whole or not at all, and never replace what they must not.

Every file is written to a temporary name beside its destination and renamed into place only when complete;
a full disk, an error or an interruption removes the temporary file and leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from occnet.runtime import signals
from occnet.runtime.errors import InputError, OutputError, ResourceError, first_line
from occnet.runtime.machine import available_memory

MAX_INFLATION = 100
"""Largest ratio of a zip member's size to its compressed size accepted for members over 1 MiB. torch.save
stores tensors uncompressed (1x) and np.savez_compressed's points and labels compress a few times; a member
that inflates 1,000x is a bomb."""


def input_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a ``Path``, refused with :class:`InputError` unless it is an existing file: "``path`` is a
    folder, not a ``what``" or "``what`` not found: ``path``"."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a {what}")
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    return path


def check_writable(path: Path) -> Path:
    """Fail early, before any work, if ``path`` cannot be created as a regular file; returns it.

    Refuses a folder, a symbolic link and any other non-regular file (FIFO, socket, device): the atomic
    rename would replace the link or the device node itself.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link; name the file it points to, or another name")
    if path.is_dir():
        raise OutputError(f"{path} is a folder, not a file name")
    if path.exists() and not path.is_file():
        raise OutputError(f"{path} exists and is not a regular file (a FIFO, socket or device); "
                          "refusing to replace it")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: folder {parent} is not writable")
    return path


def check_output(path: Path, inputs: Iterable[Path] = ()) -> bool:
    """:func:`check_writable`, and refuse to replace one of the command's ``inputs`` or a PyTorch checkpoint
    (any zip archive). Returns True when ``path`` exists and would be replaced (the caller says so)."""
    path = check_writable(Path(path))
    if not path.exists():
        return False
    for source in inputs:
        if Path(source).exists() and os.path.samefile(path, source):
            raise OutputError(f"{path} is this command's own input; refusing to overwrite it")
    if zipfile.is_zipfile(path):
        raise OutputError(f"{path} holds a zip archive (a PyTorch checkpoint?); refusing to replace it")
    return True


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error, interruption or
    a full disk remove it. An ``OSError`` on the way becomes :class:`OutputError` ``cannot write PATH: ...``."""
    path = check_writable(Path(path))
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # the kernel applies the process umask to 0o666, as for any new file: no umask juggling
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp
        signals.raise_if_received()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or first_line(exc)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def claimed_folder(folder: Path, holder: str) -> Iterator[Path]:
    """``folder`` (an ``--out-dir``) created if need be and locked for the duration, so that a second command
    writing into it is refused (``another {holder} is writing to ...``) while this one lives. Folders created
    here and left empty by a failure are removed."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out-dir {folder} is a file, not a folder")
    created = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise InputError(f"cannot create --out-dir {folder}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)     # released when the descriptor closes
        except BlockingIOError:
            raise InputError(f"another {holder} is writing to {folder}; wait for it to finish or choose another "
                             "--out-dir") from None
        yield folder
    except BaseException:
        if created is not None:
            _remove_empty(folder, created)
        raise
    finally:
        os.close(lock)


def _remove_empty(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` while they are empty."""
    for path in [folder, *folder.parents]:
        try:
            path.rmdir()
        except OSError:
            return
        if path == top:
            return


def check_archive_sizes(path: Path, what: str) -> None:
    """Refuse a zip archive (a torch checkpoint, an ``.npz``) from the sizes its directory declares, before
    any member is inflated: in all more than the memory available, or a member over 1 MiB that would inflate
    more than :data:`MAX_INFLATION` times. A 6 MB checkpoint declaring 6.5 GB took that much memory; a 6 MB
    ``.npz`` declaring 536 M points ran past 4.4 GB and 200 s. ``what``: what the members hold, for the
    message."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable zip archive ({first_line(exc)})") from None
    total, have = sum(m.file_size for m in members), available_memory()
    if have is not None and total > have.nbytes:
        raise ResourceError(f"{path}: its archive declares {total / 2**30:.1f} GiB of {what}, more than the "
                            f"{have} available")
    for member in members:
        if member.file_size > 1 << 20 and member.file_size > MAX_INFLATION * max(member.compress_size, 1):
            raise InputError(f"{path}: refused: {member.filename!r} would inflate {member.compress_size:,} bytes "
                             f"to {member.file_size:,} (more than {MAX_INFLATION}x: a zip bomb, not {what})")
