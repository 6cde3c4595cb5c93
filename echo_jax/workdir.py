"""A run's work directory: which run it holds, how the run met the hardware, and its metrics log.

A work directory holds ``config.json`` (the resolved config), ``layout.json`` (models per program and data
loop, decided once), ``metrics.jsonl`` (training and evaluation logs), ``checkpoints/`` (orbax; one folder
per program of a sweep run in chunks: ``checkpoints-<chunk>/``), optionally ``tensorboard/`` and, at the end,
``results.json``; and ``lock``, which the process running the run holds an OS lock on (`lock`). Work
directories of echo-jax 0.1 (flat config.json, ``checkpoint*.msgpack``) resume.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import socket
from collections.abc import Callable

import jax
import ml_collections
from absl import logging

from echo_jax import identity
from echo_jax.errors import WorkdirError
from echo_jax.files import write_atomic

LOCK_FILE = "lock"


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
        if jax.process_index() != 0:
            return
        created = not os.path.exists(workdir)
        os.makedirs(workdir, exist_ok=True)
        path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
        if path in Lock._held:
            Lock._held[path][1] += 1
            self.path = path
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
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
      WorkdirError: `workdir` holds the files of another run, or run files without a config.json.
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
    with open(config_path) as f:
        held = json.load(f)
    differing = identity.workdir_mismatch(held, config)
    if differing:
        raise WorkdirError(
            f"workdir {workdir} holds another run (its config differs in: {', '.join(differing)}); "
            "use a new --workdir, or delete that one to start over"
        )
    if not os.path.exists(results_path):
        return None
    with open(results_path) as f:
        return json.load(f)


def checkpoint_files(workdir: str) -> list[str]:
    """The checkpoints in `workdir`: orbax folders and echo-jax 0.1's msgpack files."""
    return glob.glob(os.path.join(workdir, "checkpoints*")) + glob.glob(os.path.join(workdir, "checkpoint*.msgpack"))


def prepare(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Creates the work directory of a run `check` accepted, writes its config.json if it has none, and removes
    temporary files left by an interrupted write."""
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() != 0:
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
        with open(path) as f:
            recorded = json.load(f)
        if recorded["runs"] != runs:
            raise WorkdirError(f"{path} records other (beta, seed) runs than this config's; use a new --workdir")
        return int(recorded["chunk_size"]), recorded.get("data_loop", "host")
    data_loop = decide_data_loop()
    chunk_size = decide_chunk_size(data_loop)
    if jax.process_index() == 0:
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
