"""A run's work directory: which run it holds, how the run met the hardware, and its metrics log.

A work directory holds ``config.json`` (the resolved config), ``layout.json`` (models per program and data
loop, decided once), ``metrics.jsonl`` (training and evaluation logs), ``checkpoints/`` (orbax; one folder
per program of a sweep run in chunks: ``checkpoints-<chunk>/``), optionally ``tensorboard/`` and, at the end,
``results.json``. Work directories of echo-jax 0.1 (flat config.json, ``checkpoint*.msgpack``) resume.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable

import jax
import ml_collections
from absl import logging

from echo_jax import defaults
from echo_jax.errors import WorkdirError
from echo_jax.files import write_atomic


def finished_results(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """The results of the finished run of this config in `workdir` (None if it is not finished there);
    refuses a work directory that holds another run. Reads no data."""
    check_config(config, workdir)
    results_path = os.path.join(workdir, "results.json")
    if not os.path.exists(results_path):
        return None
    with open(results_path) as f:
        return json.load(f)


def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises `WorkdirError` if `workdir` holds the files of another run than `config`'s.

    Configs are compared as `defaults.flat_fields`, so a work directory written before the model group
    existed (or with 0 for "unset") still matches; a field added to the configs after the work directory was
    written matches at its default; execution fields (`defaults.EXECUTION_FIELDS`: log and checkpoint
    intervals, where the data is read from, ...) may change between a run and its resume.
    """
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        if checkpoint_files(workdir) or os.path.exists(os.path.join(workdir, "results.json")):
            raise WorkdirError(
                f"workdir {workdir} holds run files but no config.json, so nothing says which run they belong to; "
                "use a new --workdir, or delete that one to start over"
            )
        return
    with open(config_path) as f:
        existing = defaults.flat_fields(json.load(f))
    resolved = defaults.flat_fields(config)
    added = defaults.flat_fields(defaults.rate_distortion_config())
    differing = sorted(
        name
        for name in (set(existing) | set(resolved)) - defaults.EXECUTION_FIELDS
        if existing.get(name) != resolved.get(name)
        and not (name not in existing and resolved.get(name) == added.get(name))
    )
    if differing:
        raise WorkdirError(
            f"workdir {workdir} holds another run (its config differs in: {', '.join(differing)}); "
            "use a new --workdir, or delete that one to start over"
        )


def checkpoint_files(workdir: str) -> list[str]:
    """The checkpoints in `workdir`: orbax folders and echo-jax 0.1's msgpack files."""
    return glob.glob(os.path.join(workdir, "checkpoints*")) + glob.glob(os.path.join(workdir, "checkpoint*.msgpack"))


def prepare(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Creates the work directory, or checks that the run it holds is this one; removes temporary files
    left by an interrupted write."""
    check_config(config, workdir)
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
