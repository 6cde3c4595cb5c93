"""Run files: atomic replacement of files and folders, JSON-lines logs, and JSON read back with one-line errors."""

from __future__ import annotations

import errno
import glob
import json
import os
import secrets
import shutil
from typing import Any

from echo_jax.errors import DiskFullError, WorkdirError


def _create_temporary(directory: str, name: str) -> tuple[int, str]:
    """Creates a new, empty, uniquely named file in `directory` for writing; returns its descriptor and path.

    Unlike `tempfile.mkstemp` (always mode 0600), the file is created with mode 0666 and the kernel takes the
    user's umask (and a directory's default ACL) off it, as for any `open(path, "w")`: the final file is as
    readable as one the user's other tools write. Reading the umask instead (``os.umask(0)`` then restoring
    it) would be process-wide and race with other threads creating files.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".tmp-{secrets.token_hex(6)}-{name}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # another writer's temporary file; draw another name
            continue
    raise FileExistsError(f"no free temporary file name in {directory}")


def write_atomic(path: str, content: bytes | str) -> None:
    """Writes a file so that a reader sees either the old or the new content, never a partial one.

    The file gets mode 0666 less the user's umask (0644 under the usual umask 022), whatever mode the file
    it replaces had.
    """
    directory = os.path.dirname(os.path.abspath(path))
    mode = "wb" if isinstance(content, bytes) else "w"
    fd, tmp = _create_temporary(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


REPLACED = ".replaced"  # suffix of a folder moved aside while its successor takes its place


def replace_directory(new: str, target: str) -> None:
    """Renames the folder `new` to `target`, replacing any folder there, so that a kill at any point leaves the
    old folder or the new one, never neither.

    An existing `target` is first moved aside to ``<target>.replaced`` and deleted only once `new` is in place;
    a kill between the two renames leaves it aside, and `settle_replaced` puts it back. A failed rename puts it
    back at once.
    """
    aside = target + REPLACED
    if os.path.isdir(target):
        if os.path.isdir(aside):  # left by a kill after its successor, `target`, was in place
            shutil.rmtree(aside)
        os.rename(target, aside)
    try:
        os.rename(new, target)
    except BaseException:
        if os.path.isdir(aside) and not os.path.exists(target):
            os.rename(aside, target)
        raise
    if os.path.isdir(aside):
        shutil.rmtree(aside)


def settle_replaced(directory: str, *, recursive: bool = False) -> None:
    """Settles the folders in `directory` (with `recursive`, at any depth) that a replacement killed midway left
    moved aside (`replace_directory`): one whose successor is in place is deleted, any other is put back."""
    pattern = os.path.join(glob.escape(directory), "**" if recursive else "", f"*{REPLACED}")
    for aside in glob.glob(pattern, recursive=recursive):
        target = aside[: -len(REPLACED)]
        if os.path.isdir(target):
            shutil.rmtree(aside)
        else:
            os.rename(aside, target)


def dumps_strict(obj, **kwargs) -> str:
    """JSON text that any JSON reader accepts: NaN and Infinity raise ValueError instead of being written."""
    return json.dumps(obj, allow_nan=False, **kwargs)


def append_jsonl(path: str, record: dict) -> None:
    """Appends one strict JSON record as a line; a failed append (a full disk) leaves the file as it was."""
    line = dumps_strict(record) + "\n"
    with open(path, "a") as f:
        size = f.tell()
        try:
            f.write(line)
            f.flush()
        except BaseException:
            f.truncate(size)  # no torn line behind
            raise


def read_json(path: str, fix: str) -> dict:
    """The JSON object in the run file at `path`.

    Raises:
      WorkdirError: the file cannot be read, is not JSON (truncated, say) or holds no object; the one line names
        the file, the problem and `fix`.
    """
    try:
        with open(path, "rb") as f:
            content = json.loads(f.read())
    except OSError as e:
        raise WorkdirError(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        why = f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)[:80]
        raise WorkdirError(f"{path} is not valid JSON ({why}); {fix}") from None
    if not isinstance(content, dict):
        raise WorkdirError(f"{path} holds a JSON {type(content).__name__}, not an object; {fix}")
    return content


def first_non_finite(value: Any, where: str = "") -> str | None:
    """The path of the first NaN or infinity in a JSON value (e.g. ``results[0].test.rate``), or None."""
    if isinstance(value, float):
        return None if value - value == 0 else where or "the value"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = first_non_finite(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found:
            return found
    return None


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` says the disk (or the user's quota) is full, also where a library rewrapped the OSError."""
    return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error)


def disk_full(where: str, error: BaseException) -> DiskFullError:
    """The one-line error of a write that found the disk full."""
    return DiskFullError(
        f"the disk is full: writing in {where} failed ({' '.join(str(error).split())[:120]}); nothing finished was "
        "overwritten: free some space (or give a --workdir on another disk) and run the same command to resume"
    )
