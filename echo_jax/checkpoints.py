"""Training checkpoints: orbax-checkpoint step directories, and the msgpack files of echo-jax 0.1.

A `Checkpointer` keeps the checkpoints of one population (a pytree of stacked train states) in one
directory, one sub-directory per saved step, as orbax-checkpoint's `CheckpointManager` lays them out::

    <directory>/<step>/state/   the state's arrays (tensorstore OCDBT/zarr); absent from a step saved without
                                a state (a record that needs no arrays, such as a finished run's results)
    <directory>/<step>/meta/    the meta dict (JSON): the run's identity, elapsed seconds, results ...

A save is written under ``<step>.orbax-checkpoint-tmp`` and renamed to ``<step>`` when complete, so a
crash mid-save leaves only a temporary directory, which is never read and is removed the next time a
`Checkpointer` opens the directory (and at once when the save fails, a full disk say). A step written
again (``save(..., replace=True)``) is first moved aside to ``<step>.replaced`` and deleted only once its
successor is in place; a crash between the two leaves the old step aside, which the next `Checkpointer`
opening the directory puts back.

The meta also holds the sha256 of the state's arrays (``state_sha256``), checked when the step is restored:
arrays changed on disk after the save are refused rather than trained on. Checkpoints saved before the
checksum existed restore without it.

`convert_msgpack_checkpoint` turns a single-file checkpoint (``checkpoint*.msgpack``) that echo-jax 0.1 wrote
into an orbax checkpoint of the same step, once, so work directories of that version still resume (the run
reads orbax checkpoints only).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging as std_logging
import os
import shutil
import time
from typing import Any, Self

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from flax import serialization

from echo_jax.errors import UserError, WorkdirError
from echo_jax.files import REPLACED, disk_full, dumps_strict, is_disk_full, settle_replaced

__all__ = ["Checkpointer", "convert_msgpack_checkpoint", "read_msgpack_checkpoint"]

_STATE, _META = "state", "meta"
_CHECKSUM = "state_sha256"  # the meta's key of the state's checksum (`_state_sha256`)
_ORBAX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(ocp.__file__)))  # .../site-packages/orbax


class _OrbaxAtWarning(std_logging.Filter):
    """Drops orbax's INFO/DEBUG records: it logs several lines per save, which would drown training logs."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not record.pathname.startswith(_ORBAX_DIR + os.sep)


def _quiet_orbax() -> None:
    # orbax logs through absl, whose single "absl" logger carries every library's records; filter by source.
    absl_logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, _OrbaxAtWarning) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxAtWarning())


_quiet_orbax()


class Checkpointer:
    """Checkpoints of one training population (a pytree of stacked train states) in one directory.

    Every process of a multi-process run creates one on the same (shared) directory and calls `save`
    and `restore` alike: orbax synchronises the processes and writes each array once.

    Example::

      with Checkpointer(os.path.join(workdir, "checkpoints", "population-0")) as checkpointer:
          if checkpointer.latest_step() is not None:
              states, meta = checkpointer.restore(population.stacked_states())
          ...
          checkpointer.save(step, sweep.to_host(population.stacked_states()), {"seconds": elapsed})

    Args:
      directory: the folder of this population's checkpoints (created if missing); it should hold
        nothing else.
      max_to_keep: how many of the latest steps to keep (at least 1); older ones are deleted after each
        save. Two keep a readable checkpoint even if the newest is damaged after it was written.

    Raises:
      TypeError, ValueError: for arguments of the wrong type or value.
      WorkdirError: if `directory` exists but is not a directory.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2):
        if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
            raise TypeError(f"directory must be a non-empty path, got {directory!r}")
        if not isinstance(max_to_keep, (int, np.integer)) or isinstance(max_to_keep, bool):
            raise TypeError(f"max_to_keep must be an int, got {type(max_to_keep).__name__}")
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be at least 1, got {max_to_keep}")
        self._directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self._directory) and not os.path.isdir(self._directory):
            raise WorkdirError(f"checkpoint directory {self._directory} is a file; move it away or use a new --workdir")
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=False,  # `save` returns once the step is renamed into place
            preservation_policy=ocp.checkpoint_managers.LatestN(int(max_to_keep)),
            cleanup_tmp_directories=True,  # leftovers of crashed saves: never read, but they take space
            create=True,
        )
        if os.path.isdir(self._directory):
            _put_back_replaced(self._directory)
        # Handlers up front (not just item names): a fresh manager can then read a step's metadata.
        handlers = {_STATE: ocp.StandardCheckpointHandler(), _META: ocp.JsonCheckpointHandler()}
        # Opened on first use, so that a run which never saves leaves no empty directory behind.
        self._open = lambda: ocp.CheckpointManager(self._directory, options=options, item_handlers=handlers)
        self._orbax: ocp.CheckpointManager | None = None
        self._closed = False

    @property
    def _manager(self) -> ocp.CheckpointManager:
        if self._orbax is None:
            self._orbax = self._open()
        return self._orbax

    @property
    def directory(self) -> str:
        """The absolute path of the checkpoint directory."""
        return self._directory

    def __repr__(self) -> str:
        return f"Checkpointer({self._directory!r}, steps={self._steps()})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Waits for orbax's outstanding work and releases it; later calls do nothing."""
        if not self._closed:
            self._closed = True
            if self._orbax is not None:
                self._orbax.close()

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None when the directory holds no checkpoint.

        Only steps seen when this object was created or saved by it count: the directory belongs to
        one writer at a time.
        """
        self._check_open()
        steps = self._steps()
        return steps[-1] if steps else None

    def save(self, step: int, state, meta: dict, *, replace: bool = False) -> None:
        """Writes `state` and `meta` as the checkpoint of `step`; returns once it is complete on disk.

        A crash mid-save leaves the previous checkpoints as they were. After the save only the newest
        ``max_to_keep`` steps remain. Every process of a multi-process run must call this alike.

        Args:
          step: the training step, later than every step already saved (or, with `replace`, the latest).
          state: a pytree (dicts, flax.struct dataclasses, optax states ...) of numpy or jax arrays;
            jax arrays may be sharded across processes. None saves the meta alone, which `meta` reads back
            (`restore` refuses such a step: it has nothing to resume from).
          meta: a dict that JSON represents exactly (string keys; str, int, float, bool, None, lists and
            dicts; no NaN or infinities, no tuples).
          replace: when `step` is the latest step, write it again (a run stopped in its final evaluation
            saved its last step without results); until the new one is complete the old one is kept aside,
            so a crash mid-save leaves the step as it was (put back by the next `Checkpointer`).

        Raises:
          TypeError, ValueError: for a step, state or meta that cannot be saved as asked, before anything
            is written.
        """
        self._check_open()
        step = _check_step(step)
        latest = self._manager.latest_step()
        aside = None  # the step being written again, moved aside until its successor is in place
        if replace and latest is not None and step == latest:
            if state is not None:
                _check_state(state)
            _check_meta(meta)
            aside = self._set_aside(step)
            latest = self._manager.latest_step()
        if latest is not None and step <= latest:
            # orbax would silently skip the save (or raise for an existing step); a resumed run never
            # goes back, so this is a caller's mistake.
            raise ValueError(f"cannot save step {step} in {self._directory}: it already holds step {latest}")
        if state is not None:
            _check_state(state)
        _check_meta(meta)
        checksum = None if state is None else _state_sha256(state)
        meta = meta if checksum is None else {**meta, _CHECKSUM: checksum}
        items = {_META: ocp.args.JsonSave(meta)}
        if state is not None:
            items[_STATE] = ocp.args.StandardSave(state)
        args = ocp.args.Composite(**items)
        try:
            if not self._manager.save(step, args=args, force=True):  # force: ignore orbax's save-interval policy
                raise RuntimeError(f"orbax did not save step {step} in {self._directory}")
            self._manager.wait_until_finished()  # no-op while synchronous; keeps `save` synchronous regardless
        except Exception as e:
            with contextlib.suppress(Exception):
                self._manager.close()
            self._orbax = None  # opened again on next use
            if jax.process_index() == 0:  # the half-written step: never read, but it takes the space
                _remove_temporary(self._directory)
                if aside is not None:
                    _put_back_replaced(self._directory, sync=False)  # the other processes may not have failed
            if is_disk_full(e) and not isinstance(e, UserError):
                raise disk_full(self._directory, e) from e
            raise
        if aside is not None and jax.process_index() == 0:
            shutil.rmtree(aside)

    def _set_aside(self, step: int) -> str:
        """Moves the saved `step` to ``<step>.replaced``, out of orbax's sight, and returns that path."""
        self._manager.close()  # it lists its steps when opened: reopened, it no longer holds `step`
        self._orbax = None
        aside = os.path.join(self._directory, f"{step}{REPLACED}")  # orbax lists no such step
        if jax.process_index() == 0:
            os.rename(os.path.join(self._directory, str(step)), aside)
        _sync_processes("echo_jax_checkpoint_set_aside")
        return aside

    def restore(self, template, step: int | None = None) -> tuple[Any, dict]:
        """Reads the checkpoint of `step` (default: the latest).

        Args:
          template: a pytree like the saved state, whose leaves (numpy or jax arrays, or
            `jax.ShapeDtypeStruct`) give each array's expected shape and dtype; jax arrays also give
            the sharding to restore into. Its values are not used.
          step: the step to read; None for the latest.

        Returns:
          ``(state, meta)``: the state with the structure of `template` (numpy leaves where `template`
          has numpy arrays, jax arrays where it has jax arrays) and the meta dict saved with it.

        Raises:
          WorkdirError: if the directory holds no such step, or its checkpoint cannot be read or holds
            arrays of other shapes or dtypes than `template`; the message names the path and the fix.
        """
        self._check_open()
        _check_state(template, what="template", allow_abstract=True)
        step, path, restart = self._find(step)
        try:
            items = self._manager.item_metadata(step)
            # orbax reports a missing item as None here (or leaves it out), and fails only when restoring
            saved = items[_STATE] if _STATE in items else None
            if saved is None:
                raise FileNotFoundError(f"it has no {_STATE!r} item")
            held = _orbax_flat(saved.tree if hasattr(saved, "tree") else saved)
        except Exception as e:  # orbax and tensorstore raise many types for damaged files
            raise WorkdirError(_unreadable(path, e, restart)) from e
        # orbax restores into the checkpoint's shape and casts to the template's dtype without a word;
        # a different array means a checkpoint of other models, which must not be trained on.
        mismatch = _first_mismatch(held, _orbax_flat(ocp.tree.serialize_tree(template)))
        if mismatch:
            raise WorkdirError(
                f"checkpoint {path} does not hold this run's state ({mismatch}); use a new --workdir, "
                f"or delete it to restart that part of the run {restart}"
            )
        args = ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(template), _META: ocp.args.JsonRestore()})
        try:
            restored = self._manager.restore(step, args=args)
            state, meta = restored[_STATE], restored[_META]
            if not isinstance(meta, dict):
                raise TypeError(f"its meta is a {type(meta).__name__}, not a dict")
        except Exception as e:  # as above
            raise WorkdirError(_unreadable(path, e, restart)) from e
        saved_checksum = meta.pop(_CHECKSUM, None)  # None: saved before checkpoints carried one
        checksum = _state_sha256(state) if saved_checksum is not None else None
        if checksum is not None and checksum != saved_checksum:
            raise WorkdirError(
                f"checkpoint {path} fails its checksum (its arrays changed on disk after the save); delete that "
                f"folder to resume that part of the run {restart}"
            )
        return state, meta

    def meta(self, step: int | None = None) -> dict:
        """The meta dict saved with `step` (default: the latest), without reading the state's arrays: all that a
        step saved without a state holds.

        Raises:
          WorkdirError: if the directory holds no such step, or its meta cannot be read.
        """
        self._check_open()
        step, path, restart = self._find(step)
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
            if not isinstance(meta, dict):
                raise TypeError(f"its meta is a {type(meta).__name__}, not a dict")
        except Exception as e:  # orbax raises many types for damaged files
            raise WorkdirError(_unreadable(path, e, restart)) from e
        meta.pop(_CHECKSUM, None)  # the arrays' checksum: `restore` checks it, with the arrays
        return meta

    def _find(self, step: int | None) -> tuple[int, str, str]:
        """``(step, path, restart)`` of a saved step (default: the latest); `restart` says where the run restarts
        if that step is deleted. Raises `WorkdirError` when there is no such step."""
        steps = self._steps()
        if step is None:
            if not steps:
                raise WorkdirError(f"checkpoint directory {self._directory} holds no checkpoint to restore")
            step = steps[-1]
        step = _check_step(step)
        if step not in steps:
            raise WorkdirError(
                f"checkpoint directory {self._directory} holds no step {step} (it holds "
                f"{', '.join(map(str, steps)) or 'none'})"
            )
        path = os.path.join(self._directory, str(step))  # orbax's default step name: the bare number
        earlier = [s for s in steps if s < step]
        return step, path, f"from step {earlier[-1]}" if earlier else "from its beginning"

    def _steps(self) -> list[int]:
        if self._orbax is None and not os.path.isdir(self._directory):
            return []
        return sorted(self._manager.all_steps())

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the Checkpointer of {self._directory} is closed")


def read_msgpack_checkpoint(path: str, template) -> tuple[Any, dict]:
    """Reads a checkpoint written by echo-jax 0.1 (one msgpack file) so old work directories resume.

    Args:
      path: the ``checkpoint*.msgpack`` file.
      template: a pytree like the saved states (e.g. the population's stacked states); its leaves give
        each array's expected shape and dtype.

    Returns:
      ``(state, meta)``: the states with the structure of `template` (numpy leaves), and
      ``{"step": int, "seconds": float}`` plus ``"identity"`` (a dict; absent from the oldest files) and,
      for a finished population, its ``"test"`` and ``"extra"`` results (lists).

    Raises:
      WorkdirError: if the file cannot be read or holds arrays of other shapes or dtypes than `template`.
    """
    _check_state(template, what="template", allow_abstract=True)
    try:
        with open(path, "rb") as f:
            restored = serialization.msgpack_restore(f.read())
        state = serialization.from_state_dict(template, restored["states"])
        meta = {"step": int(restored["step"]), "seconds": float(restored["seconds"])}
        if "identity" in restored:
            meta["identity"] = json.loads(restored["identity"])
        if "test" in restored:
            meta["test"], meta["extra"] = json.loads(restored["test"]), json.loads(restored["extra"])
    except Exception as e:  # msgpack raises several types for a damaged file
        raise WorkdirError(_unreadable(path, e, "from its beginning")) from e
    # from_state_dict takes the file's arrays as they are, whatever their shapes.
    held = jax.tree.map(np.asarray, _orbax_flat(ocp.tree.serialize_tree(state)))
    mismatch = _first_mismatch(held, _orbax_flat(ocp.tree.serialize_tree(template)))
    if mismatch:
        raise WorkdirError(
            f"checkpoint {path} does not hold this run's state ({mismatch}); use a new --workdir, "
            "or delete it to restart that part of the run from its beginning"
        )
    return state, meta


def convert_msgpack_checkpoint(path: str, checkpointer: Checkpointer, template) -> int:
    """Converts echo-jax 0.1's checkpoint file into an orbax checkpoint of its step in `checkpointer`, then removes
    the file. Every process of a multi-process run calls it alike (the save is collective); process 0 removes it.

    Args:
      path: the ``checkpoint*.msgpack`` file.
      checkpointer: the population's checkpoints, which hold none yet.
      template: as for `read_msgpack_checkpoint`.

    Returns:
      The checkpoint's step.

    Raises:
      WorkdirError: as `read_msgpack_checkpoint`; the file is then left as it was.
    """
    state, meta = read_msgpack_checkpoint(path, template)
    checkpointer.save(meta["step"], state, meta)
    if jax.process_index() == 0:
        os.remove(path)
    return meta["step"]


# --------------------------------------------------------------------------------------------- helpers


def _unreadable(path: str, error: BaseException, restart: str) -> str:
    detail = " ".join(str(error).split())  # one line: tensorstore's messages span several
    if len(detail) > 300:
        detail = detail[:297] + "..."
    return (
        f"checkpoint {path} cannot be read ({type(error).__name__}: {detail}); delete it to restart that part "
        f"of the run {restart}"
    )


def _check_step(step) -> int:
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    return int(step)


def _check_state(state, *, what: str = "state", allow_abstract: bool = False) -> None:
    kinds = (np.ndarray, jax.Array, jax.ShapeDtypeStruct) if allow_abstract else (np.ndarray, jax.Array)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    if not leaves:
        raise ValueError(f"{what} holds no arrays")
    for path, leaf in leaves:
        # orbax saves numpy scalars and Python numbers but cannot restore into them: refuse them up front.
        if not isinstance(leaf, kinds):
            raise TypeError(
                f"{what}{jax.tree_util.keystr(path)} is a {type(leaf).__name__}; every leaf must be "
                "a numpy or jax array (np.asarray turns scalars into 0-d arrays)"
            )


def _check_meta(meta) -> None:
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        text = dumps_strict(meta)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta cannot be written as JSON ({e})") from None
    if json.loads(text) != meta:  # tuples, non-string keys: JSON would hand back something else
        raise ValueError("meta does not survive JSON unchanged (tuples or non-string keys?): use lists and str keys")


def _put_back_replaced(directory: str, *, sync: bool = True) -> None:
    """Settles steps moved aside by a replacing save that did not finish (`files.settle_replaced`, on process 0;
    with `sync`, every process waits for it)."""
    if jax.process_index() == 0:
        settle_replaced(directory)
    if sync:
        _sync_processes("echo_jax_checkpoint_put_back")


def _sync_processes(name: str) -> None:
    if jax.process_count() > 1:
        ocp.multihost.sync_global_processes(name)


def _remove_temporary(directory: str, settle_seconds: float = 0.3, limit_seconds: float = 5.0) -> None:
    """Removes the temporary folders of a failed save. The writer of another item of the step may still be
    finishing when one item's failure reaches us (tensorstore writes from its own threads, which orbax does not
    wait for): remove until none comes back for `settle_seconds`."""
    pattern = os.path.join(glob.escape(directory), "*.orbax-checkpoint-tmp*")
    deadline, quiet_since = time.monotonic() + limit_seconds, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < settle_seconds:
        leftovers = glob.glob(pattern)
        for tmp in leftovers:
            shutil.rmtree(tmp, ignore_errors=True)
        if leftovers:
            quiet_since = time.monotonic()
        time.sleep(0.05)


def _state_sha256(state) -> str | None:
    """The sha256 of a state's arrays (names, dtypes, shapes and bytes), or None when a process does not hold
    them all (arrays sharded across processes are not checksummed)."""
    digest = hashlib.sha256()
    for name, leaf in sorted(_orbax_flat(ocp.tree.serialize_tree(state)).items()):
        if isinstance(leaf, jax.Array):
            if not leaf.is_fully_addressable:
                return None
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _expected(leaf) -> jax.ShapeDtypeStruct:
    """The array a template leaf stands for on disk: typed PRNG keys are stored as their key data."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return jax.eval_shape(jax.random.key_data, leaf)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)


def _first_mismatch(held: dict, expected: dict) -> str | None:
    """The first difference between the arrays on disk and those expected (both keyed by path), or None.

    Args:
      held: the saved arrays or their metadata (anything with ``shape`` and ``dtype``).
      expected: the template's leaves under the same keys.
    """
    for name in sorted(set(held) | set(expected)):
        if name not in held:
            return f"{name}: missing on disk"
        if name not in expected:
            return f"{name}: on disk, not in this run's state"
        have, want = held[name], _expected(expected[name])
        if tuple(have.shape) != tuple(want.shape) or np.dtype(have.dtype) != np.dtype(want.dtype):
            return (
                f"{name}: {np.dtype(have.dtype).name}{list(have.shape)} on disk, "
                f"{np.dtype(want.dtype).name}{list(want.shape)} expected"
            )
    return None


def _orbax_flat(tree) -> dict:
    """`tree`'s leaves keyed as orbax names them on disk ("params.w", "opt_state.0.mu.w")."""
    return {".".join(map(str, k)): leaf for k, leaf in ocp.tree.to_flat_dict(tree).items()}
