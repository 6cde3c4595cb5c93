"""Where a training run's metrics go besides ``metrics.jsonl``: a progress bar, log lines and TensorBoard event files.

``<workdir>/metrics.jsonl`` stays the record of truth: every logged number goes there, strictly as JSON, and
the reports, the resume logic and the tests read it. What this module writes is a view of the same numbers:

* `progress` - a tqdm bar with an ETA on stderr, shown only on an interactive terminal of process 0
  (``ECHO_JAX_PROGRESS=1`` forces it on, ``=0`` off).
* log lines - one line per model for each log period and test evaluation, naming its method, beta and seed
  (`train_lines`, `evaluation_lines`), and the run in words (`describe_models`, `devices_in_words`).
* `TensorBoard` - with ``config.tensorboard = True``, event files under ``<workdir>/tensorboard/``, one run
  folder per model (``beta<b>_seed<s>``), written with tensorboardX (``pip install 'echo-jax[tensorboard]'``)
  without TensorFlow. Look at them with ``tensorboard --logdir <workdir>/tensorboard`` (TensorBoard itself is
  installed separately). Non-finite values are left out of the event files; metrics.jsonl is where a
  divergence is recorded and reported.

Only process 0 of a multi-process run shows a bar or writes event files.
"""

from __future__ import annotations

import math
import os
import sys
import types
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final, Self

import jax
import numpy as np
import tqdm

from echo_jax.errors import ConfigError

PROGRESS_ENV: Final = "ECHO_JAX_PROGRESS"
TENSORBOARD_DIR: Final = "tensorboard"
_MISSING_TENSORBOARDX: Final = "config.tensorboard = True needs tensorboardX: pip install 'echo-jax[tensorboard]'"


def require_tensorboardx() -> types.ModuleType:
    """tensorboardX, imported only when TensorBoard output is asked for (and by `validate_config`, before any work
    starts); a `ConfigError` where it is missing."""
    try:
        import tensorboardX  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise ConfigError(_MISSING_TENSORBOARDX) from err
    return tensorboardX


def run_name(beta: float, seed: int) -> str:
    """The TensorBoard run folder of one model: ``beta1_seed0``, ``beta0.5_seed3``, ``beta0.25_seed1``."""
    return f"beta{float(beta):g}_seed{int(seed)}"


class TensorBoard:
    """One TensorBoard run per model, under <workdir>/tensorboard/beta<b>_seed<s>/, so TensorBoard overlays the
    models of a sweep.

    Each value is the scalar ``f"{split}/{name}"`` (``train/loss``, ``eval/rate``, ...) of its model's run, at
    the training step given. Only ``jax.process_index() == 0`` writes; on the other processes every method
    does nothing (but a missing tensorboardX is still reported on all of them, so that they fail together).

    Resuming (the same work directory reopened after an interruption) simply adds new event files beside the
    old ones in each run folder; TensorBoard reads them all as one run. Points the interrupted run logged
    after its last checkpoint are logged again by the resumed run; pass ``resume_step`` (the step the run
    resumes from) and TensorBoard discards the older files' points at and after that step, so the curves
    show each step once.

    Usable as a context manager, which closes it.

    Args:
      workdir: the run's work directory.
      runs: one (beta, seed) pair per model, in the order of the values given to `write`.
      resume_step: the step a resumed run restarts from, or None for a new run.

    Raises:
      ConfigError: tensorboardX is not installed.
      ValueError: two runs share a folder name (the same (beta, seed), or betas equal to 6 significant digits).
    """

    def __init__(self, workdir: str, runs: Sequence[tuple[float, int]], *, resume_step: int | None = None):
        tensorboardx = require_tensorboardx()
        self.names: list[str] = [run_name(beta, seed) for beta, seed in runs]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"runs {list(runs)} give repeated TensorBoard folders {self.names}")
        self.logdir: str = os.path.join(workdir, TENSORBOARD_DIR)
        self._writers: list[Any] = []
        if jax.process_index() != 0:
            return
        # A unique suffix: tensorboardX names files by the second and the host and truncates an existing
        # file, so a resume within the same second would otherwise overwrite the interrupted run's file.
        suffix = f".{os.getpid()}.{uuid.uuid4().hex[:8]}"
        for name in self.names:
            self._writers.append(
                tensorboardx.SummaryWriter(
                    logdir=os.path.join(self.logdir, name),
                    purge_step=resume_step,
                    max_queue=100,
                    flush_secs=30,
                    filename_suffix=suffix,
                )
            )

    def write(self, step: int, split: str, values: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        """Writes ``f"{split}/{name}"`` at ``step`` for each model, leaving out non-finite values.

        Args:
          step: the training step (the x axis).
          split: the tag prefix, e.g. ``train`` or ``eval``.
          values: name -> one value per model (``len(runs)`` of them, in the order of ``runs``).

        Raises:
          ValueError: a value list is not one number per model.
        """
        arrays = {}
        for name, value in values.items():
            array = np.asarray(value, dtype=np.float64)
            if array.shape != (len(self.names),):
                raise ValueError(
                    f"{split}/{name}: expected one value per model ({len(self.names)}), got shape {array.shape}"
                )
            arrays[name] = array
        for i, writer in enumerate(self._writers):
            for name, array in arrays.items():
                value = float(array[i])
                if math.isfinite(value):
                    writer.add_scalar(f"{split}/{name}", value, global_step=int(step))

    def flush(self) -> None:
        """Writes what is queued to the event files."""
        for writer in self._writers:
            writer.flush()

    def close(self) -> None:
        """Flushes and closes the event files; later writes write nothing."""
        for writer in self._writers:
            writer.close()
        self._writers = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _progress_enabled() -> bool:
    """Whether `progress` shows a bar: see its docstring."""
    if jax.process_index() != 0:
        return False
    setting = os.environ.get(PROGRESS_ENV, "").strip()
    if setting == "1":
        return True
    if setting == "0":
        return False
    if setting:
        raise ConfigError(f"{PROGRESS_ENV}={setting!r}: use 1 (show progress bars), 0 (hide them) or leave it unset")
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def progress(total: int, *, initial: int = 0, desc: str = "", unit: str = "step") -> tqdm.tqdm:
    """A tqdm progress bar with an ETA on stderr, redrawn at most about once a second.

    The bar is quiet (``disable=True``; updating it costs nothing) when stderr is not a terminal (logs, batch
    jobs), on processes other than ``jax.process_index() == 0``, or when the environment variable
    ``ECHO_JAX_PROGRESS=0``. ``ECHO_JAX_PROGRESS=1`` shows it even where stderr is not a terminal (notebooks,
    followed log files); it never shows on the other processes.

    Args:
      total: the count at the end, e.g. the run's last step.
      initial: the count already done, e.g. the step a resumed run starts from (the ETA counts from there).
      desc: the label before the bar.
      unit: what is counted.

    Raises:
      ConfigError: ECHO_JAX_PROGRESS is set to something other than 0 or 1.
    """
    return tqdm.tqdm(
        total=total,
        initial=initial,
        desc=desc or None,
        unit=unit,
        dynamic_ncols=True,
        mininterval=1.0,
        disable=not _progress_enabled(),
    )


# ----------------------------------------------------------------------------------------------- log lines


def model_label(encoder: str, beta: float, seed: int) -> str:
    """How log lines name one model of a run: ``echo beta=1 seed=0``."""
    return f"{encoder} beta={float(beta):g} seed={int(seed)}"


def models_label(encoder: str, runs: Sequence[tuple[float, int]]) -> str:
    """How the progress bar and log lines name the models of a run together: ``echo beta=8 seeds 0,1,2``."""
    return f"{encoder} {_betas_and_seeds(runs)}"


def describe_models(encoder: str, runs: Sequence[tuple[float, int]]) -> str:
    """The models of a run in a few words: ``3 echo models: beta=8 seeds 0,1,2``."""
    noun = "model" if len(runs) == 1 else "models"
    return f"{len(runs)} {encoder} {noun}: {_betas_and_seeds(runs)}"


def _betas_and_seeds(runs: Sequence[tuple[float, int]]) -> str:
    betas = sorted({float(b) for b, _ in runs})
    seeds = sorted({int(s) for _, s in runs})
    return f"beta={','.join(f'{b:g}' for b in betas)} seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}"


def devices_in_words(devices: Sequence[Any]) -> str:
    """The devices a run sees, e.g. ``1 CPU device``, ``8 TPU devices (TPU v4)``, ``2 GPU devices (NVIDIA H200)
    on 2 processes``: counted by platform and kind (the kind is left out where it only repeats the platform)."""
    counts: dict[tuple[str, str], int] = {}
    for device in devices:
        kind = (str(device.platform), str(getattr(device, "device_kind", device.platform)))
        counts[kind] = counts.get(kind, 0) + 1
    parts = [
        f"{n} {platform.upper()} device{'s' if n > 1 else ''}" + (f" ({kind})" if kind.lower() != platform else "")
        for (platform, kind), n in counts.items()
    ]
    processes = len({getattr(d, "process_index", 0) for d in devices})
    return ", ".join(parts) + (f" on {processes} processes" if processes > 1 else "")


# The terms a log line shows, when present: the rest (the loss, the TC discriminator's) follow from these or
# are no measure of the model.
_SHOWN = ("rate", "distortion", "neg_elbo", "iwae_nll", "mmd", "tc")


def _line(head: str, label: str, values: Mapping[str, Any], m: int) -> str:
    terms = " ".join(f"{n} {float(np.asarray(values[n])[m]):.2f}" for n in _SHOWN if n in values)
    return f"{head}  {label}  {terms} (nats)"


def train_lines(
    step: int,
    total_steps: int,
    encoder: str,
    runs: Sequence[tuple[float, int]],
    values: Mapping[str, Sequence[float]],
    steps_per_second: float | None,
) -> list[str]:
    """One labeled line per model for a training log period, e.g.
    ``step 500/50000  echo beta=1 seed=0  rate 24.10 distortion 71.20 neg_elbo 95.30 (nats)  12.3 steps/s``.

    Args:
      step, total_steps: where the run is.
      encoder: the models' encoder (their method's name in the line).
      runs: (beta, seed) of each model, in the order of `values`' entries.
      values: per-name sequences of one value per model (``rate``, ``distortion`` and ``neg_elbo`` are shown,
        with ``mmd`` and ``tc`` where present).
      steps_per_second: updates a second over the last period (compilation excluded), or None if not measured.
    """
    head = f"step {step:>{len(str(total_steps))}}/{total_steps}"
    speed = f"  {steps_per_second:.1f} steps/s" if steps_per_second else ""
    return [_line(head, model_label(encoder, b, s), values, m) + speed for m, (b, s) in enumerate(runs)]


def evaluation_lines(
    step: int,
    total_steps: int,
    encoder: str,
    runs: Sequence[tuple[float, int]],
    rows: Sequence[Mapping[str, float]],
    *,
    final: bool = False,
) -> list[str]:
    """One labeled line per model for a test evaluation, e.g.
    ``test at step 5000/50000  echo beta=1 seed=0  rate 24.10 distortion 71.20 neg_elbo 95.30 (nats)``, and
    ``final test at step ...`` for the final one (which adds the IWAE bound, ``iwae_nll``, where there is one).

    Args:
      step, total_steps: where the run is.
      encoder: the models' method, as for `train_lines`.
      runs: (beta, seed) of each model, in the order of `rows`.
      rows: each model's test terms by name.
      final: whether this is the final evaluation.
    """
    head = f"{'final test' if final else 'test'} at step {step:>{len(str(total_steps))}}/{total_steps}"
    columns = {name: [row[name] for row in rows] for name in _SHOWN if rows and name in rows[0]}
    return [_line(head, model_label(encoder, b, s), columns, m) for m, (b, s) in enumerate(runs)]


def duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.4 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
