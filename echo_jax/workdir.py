"""A run's work directory: which run it holds, how the run met the hardware, and its metrics log.

A work directory holds ``config.json`` (the resolved config), ``layout.json`` (models per program and data
loop, decided once), ``metrics.jsonl`` (training and evaluation logs), ``checkpoints/`` (orbax; one folder
per program of a sweep run in chunks: ``checkpoints-<chunk>/``; a finished program's holds its results, not its
training state), ``models/`` (each trained model's parameters file and pictures, `echo_jax.trained`),
optionally ``tensorboard/`` and, at the end, ``results.json``; and ``lock``, which the process running the run
holds an OS lock on (`lock`). Work directories of echo-jax 0.1 (flat config.json, ``checkpoint*.msgpack``)
resume.

Nothing read back is believed unchecked: config.json and results.json must be JSON objects, and a results.json
must hold a finite row per (beta, seed) model of its config (`read_results`); otherwise a one-line
`WorkdirError` names the file and the fix, before anything is written. A read-only work directory is still read
(its finished run answers); one whose run must still write is refused (`require_writable`).
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import numbers
import os
import socket
from collections.abc import Callable

import ml_collections
from absl import logging

from echo_jax import identity
from echo_jax.errors import WorkdirError
from echo_jax.files import first_non_finite, read_json, write_atomic

LOCK_FILE = "lock"


def _process_index() -> int:
    """This process's index among a multi-process run's (0 when alone). Jax is imported here, not with the
    module: reading a finished run's files (a campaign's status, a report) needs none of it."""
    import jax

    return jax.process_index()


class WorkdirBusy(WorkdirError):
    """Another process holds the work directory's lock."""


class Lock:
    """An exclusive OS lock (flock) on a work directory's ``lock`` file, held until `release` (or the end of a
    ``with`` block) or until the process ends, however it ends: a killed process leaves no stale lock.

    The file names the holder (host and process id) for the message of a process that finds it held. Within
    one process a lock is re-entrant: a run inside a campaign program, or a quickstart, takes the lock its
    caller already holds. Only process 0 of a multi-process run takes it (the others write nothing). A work
    directory the lock created and nothing else wrote into (a run that failed on its data, say) is removed
    when the lock is released, so that a failed command leaves nothing behind.

    Raises:
      WorkdirBusy: another process holds the lock (before anything is written in the work directory).
    """

    _held: dict[str, list] = {}  # this process's locks: real path -> [descriptor, holds, created its directory]

    def __init__(self, workdir: str):
        self.path = None
        if _process_index() != 0:
            return
        created = not os.path.exists(workdir)
        if not created and not os.path.isdir(workdir):
            raise WorkdirError(f"workdir {workdir} is a file, not a directory; give the path of a directory")
        try:
            os.makedirs(workdir, exist_ok=True)
        except OSError as e:
            raise WorkdirError(f"workdir {workdir} cannot be created ({e.strerror}); give another --workdir") from None
        path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
        if path in Lock._held:
            Lock._held[path][1] += 1
            self.path = path
            return
        cloexec = getattr(os, "O_CLOEXEC", 0)
        try:
            fd, writable = os.open(path, os.O_RDWR | os.O_CREAT | cloexec, 0o666), True
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            # A read-only work directory: a finished run there is still read (`require_writable` guards writes).
            if not os.path.exists(path):
                return
            fd, writable = os.open(path, os.O_RDONLY | cloexec), False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            who = f"process {owner[1]} on host {owner[0]}" if len(owner) == 2 else "another process"
            raise WorkdirBusy(
                f"workdir {workdir} is in use by {who}: one process at a time trains a work directory; wait for "
                "it to end, or use another --workdir"
            ) from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
        Lock._held[path] = [fd, 1, created]
        self.path = path

    def release(self) -> None:
        """Lets the lock go (once the last of this process's holds on it is released); later calls do nothing."""
        if self.path is None:
            return
        held = Lock._held[self.path]
        held[1] -= 1
        if held[1] == 0:
            del Lock._held[self.path]
            directory = os.path.dirname(self.path)
            if held[2] and os.listdir(directory) == [LOCK_FILE]:  # created here, and nothing was written
                os.remove(self.path)
                os.rmdir(directory)
            # Otherwise the file stays: removing it would race with a process opening it to take the lock.
            fcntl.flock(held[0], fcntl.LOCK_UN)
            os.close(held[0])
        self.path = None

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def lock(workdir: str) -> Lock:
    """Takes `workdir`'s lock for this process (see `Lock`); use as ``with workdir.lock(path): ...``."""
    return Lock(workdir)


def check(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """Checks that `workdir` holds `config`'s run, or none, and returns its results if it is finished (None if
    not). Reads config.json once, and no data.

    The configs are compared as `echo_jax.identity` says what a run computes: execution fields (log and
    checkpoint intervals, where the data is read from, ...) may change between a run and its resume; every
    other field must be equal, unset equal only to unset (beta 0 is not the default beta, and data_seed 0 not
    an unset data_seed, unless the seed is 0 too).

    Raises:
      WorkdirError: `workdir` holds the files of another run, run files without a config.json, or a config.json
        or results.json that cannot be trusted (`read_results`).
    """
    config_path = os.path.join(workdir, "config.json")
    results_path = os.path.join(workdir, "results.json")
    if not os.path.exists(config_path):
        if checkpoint_files(workdir) or os.path.exists(results_path):
            raise WorkdirError(
                f"workdir {workdir} holds run files but no config.json, so nothing says which run they belong to; "
                "use a new --workdir, or delete that one to start over"
            )
        return None
    held = read_config(config_path)
    differing = identity.workdir_mismatch(held, config)
    if differing:
        raise WorkdirError(
            f"workdir {workdir} holds another run (its config differs in: {', '.join(differing)}); "
            "use a new --workdir, or delete that one to start over"
        )
    if not os.path.exists(results_path):
        return None
    return read_results(workdir, config)


def read_config(path: str) -> dict:
    """The run config in a config.json (a JSON object with a dataset), or `WorkdirError` in one line."""
    fix = "restore it, or use a new --workdir (or delete that one to start over)"
    held = read_json(path, fix)
    if "dataset" not in held:
        raise WorkdirError(f"{path} is not a run's config (it has no dataset field); {fix}")
    return held


def read_results(workdir: str, config: ml_collections.ConfigDict | None = None) -> dict:
    """The results.json of the finished run in `workdir`, checked before it is believed: a JSON object with a row
    per (beta, seed) model of the run's config (`config`, else the work directory's config.json) and finite
    numbers only (the runner never writes others).

    Raises:
      WorkdirError: one line naming the file, what is wrong and the fix.
    """
    path = os.path.join(workdir, "results.json")
    fix = "delete it and run the same command again: a finished checkpoint writes it again, else the run retrains"
    results = read_json(path, fix)
    if config is None and os.path.exists(os.path.join(workdir, "config.json")):
        config = ml_collections.ConfigDict(read_config(os.path.join(workdir, "config.json")))
    try:
        runs = None if config is None else identity.runs_of(config)
    except (AttributeError, KeyError, TypeError, ValueError):  # a config.json older than these fields
        runs = None
    problem = results_problem(results, runs)
    if problem:
        raise WorkdirError(f"{path} cannot be trusted: {problem}; {fix}")
    return results


def results_problem(results: dict, runs: list | None) -> str | None:
    """What is wrong with the content of a results.json for the (beta, seed) `runs` (None: any), or None."""
    rows = results.get("results")
    if not isinstance(rows, list) or not rows:
        return "it has no list of results"
    number = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)  # noqa: E731
    for i, row in enumerate(rows):
        test = row.get("test") if isinstance(row, dict) else None
        if not isinstance(test, dict) or not test or not number(row.get("beta")) or not number(row.get("seed")):
            return f"results[{i}] is not a model's row (beta, seed and test terms)"
        if not all(number(v) for v in test.values()):
            return f"results[{i}].test holds a value that is not a number"
    held = [(float(r["beta"]), int(r["seed"])) for r in rows]
    if runs is not None and held != [(float(b), int(s)) for b, s in runs]:
        return f"it holds the (beta, seed) models {held}, its config trains {[tuple(r) for r in runs]}"
    bad = first_non_finite(results)
    return f"{bad} is not a finite number" if bad else None


def require_writable(workdir: str) -> None:
    """Raises `WorkdirError` unless a file can be created in `workdir` (tried, since permissions do not tell:
    root writes anywhere but on a read-only file system)."""
    probe = os.path.join(workdir, f".tmp-probe-{os.getpid()}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.remove(probe)
    except OSError as e:
        raise WorkdirError(
            f"workdir {workdir} is not writable ({e.strerror}) and its run is not finished; make it writable, or use "
            "another --workdir"
        ) from None


def checkpoint_files(workdir: str) -> list[str]:
    """The checkpoints in `workdir`: orbax folders and echo-jax 0.1's msgpack files."""
    return glob.glob(os.path.join(workdir, "checkpoints*")) + glob.glob(os.path.join(workdir, "checkpoint*.msgpack"))


def prepare(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Creates the work directory of a run `check` accepted, writes its config.json if it has none, and removes
    temporary files left by an interrupted write."""
    os.makedirs(workdir, exist_ok=True)
    if _process_index() != 0:
        return
    for stale in glob.glob(os.path.join(workdir, ".tmp-*")):
        os.remove(stale)
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        write_atomic(config_path, json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True))


def layout(
    workdir: str, runs: list, decide_chunk_size: Callable[[str], int], decide_data_loop: Callable[[], str]
) -> tuple[int, str]:
    """How the run meets the hardware, decided once and recorded in the work directory's layout.json, then
    reused on resume: the models per program (so a checkpoint always meets the same models) and the data
    loop, ``host`` or ``device`` (so a resumed run continues the same data stream, even where ``auto``
    would now choose the other loop; a layout written before the on-device loop existed means ``host``).

    Args:
      workdir: the run's directory.
      runs: the (beta, seed) pairs of the run.
      decide_chunk_size: ``data_loop -> models per program``, asked for a new run only.
      decide_data_loop: ``() -> "host" | "device"``, asked for a new run only.

    Returns:
      (chunk_size, data_loop).
    """
    path = os.path.join(workdir, "layout.json")
    runs = [list(r) for r in runs]
    if os.path.exists(path):
        recorded = read_json(path, "delete it (the run decides it again) or use a new --workdir")
        if recorded.get("runs") != runs or not isinstance(recorded.get("chunk_size"), int):
            raise WorkdirError(f"{path} records other (beta, seed) runs than this config's; use a new --workdir")
        return int(recorded["chunk_size"]), recorded.get("data_loop", "host")
    data_loop = decide_data_loop()
    chunk_size = decide_chunk_size(data_loop)
    if _process_index() == 0:
        write_atomic(path, json.dumps({"runs": runs, "chunk_size": chunk_size, "data_loop": data_loop}))
    return chunk_size, data_loop


def trim_metrics(path: str, runs: list, step: int) -> None:
    """Drops the records of these runs logged after `step` (work lost to an interruption, about to be redone).

    A torn last line (an append cut short by a kill or a full disk) is dropped with a warning; an unreadable
    line before the last is corruption, not an interruption, and raises `WorkdirError`.
    """
    if not os.path.exists(path):
        return
    betas, seeds = [b for b, _ in runs], [s for _, s in runs]
    with open(path, "rb") as f:
        content = f.read()
    records = _metrics_records(path, content)
    kept = [line for line, record in records if not _later_record(record, betas, seeds, step)]
    trimmed = b"".join(kept)
    if trimmed != content:
        write_atomic(path, trimmed)


def _metrics_records(path: str, content: bytes) -> list[tuple[bytes, dict]]:
    """The lines of a metrics log (each ending in a newline) with their records, without a torn last line.

    Raises:
      WorkdirError: a line before the last is not a JSON object.
    """
    lines = content.split(b"\n")
    if lines[-1] == b"":  # the file ends with a newline, as every complete append leaves it
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)  # bytes: a non-UTF-8 byte raises UnicodeDecodeError, a ValueError
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as e:
            if number < len(lines):
                why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)[:80]
                raise WorkdirError(
                    f"{path} line {number} is not a JSON record ({why}), and lines follow "
                    "it, so this is corruption, not an interrupted write; fix or delete that line, or use a new "
                    "--workdir"
                ) from None
            logging.warning(
                "dropping the torn last line %d of %s (%d bytes, an append cut short by a kill or a full disk)",
                number,
                path,
                len(line),
            )
            break
        records.append((line + b"\n", record))  # a last line cut just before its newline gets one back
    return records


def _later_record(record: dict, betas: list, seeds: list, step: int) -> bool:
    return record["beta"] == betas and record["seed"] == seeds and record["step"] > step
