"""Writing run files safely: atomic replacement and JSON-lines logs."""

from __future__ import annotations

import json
import os
import secrets


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


def dumps_strict(obj, **kwargs) -> str:
    """JSON text that any JSON reader accepts: NaN and Infinity raise ValueError instead of being written."""
    return json.dumps(obj, allow_nan=False, **kwargs)


def append_jsonl(path: str, record: dict) -> None:
    """Appends one strict JSON record as a line."""
    line = dumps_strict(record) + "\n"
    with open(path, "a") as f:
        f.write(line)
