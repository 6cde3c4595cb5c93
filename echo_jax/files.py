"""Writing run files safely: atomic replacement and JSON-lines logs."""

from __future__ import annotations

import json
import os
import tempfile


def write_atomic(path: str, content: bytes | str) -> None:
    """Writes a file so that a reader sees either the old or the new content, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    mode = "wb" if isinstance(content, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
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
