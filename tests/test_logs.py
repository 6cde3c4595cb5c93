"""Tests for echo_jax.logs: TensorBoard event files (read back record by record) and the progress bar."""

from __future__ import annotations

import builtins
import glob
import io
import json
import math
import os
import struct
import sys

import jax
import numpy as np
import pytest

from echo_jax import logs
from echo_jax.errors import ConfigError

RUNS = [(1.0, 0), (0.5, 0), (0.25, 1)]
FOLDERS = ["beta1_seed0", "beta0.5_seed0", "beta0.25_seed1"]


def _records(path: str) -> list[bytes]:
    """The records of a TFRecord file, checking the framing: u64 length, masked crc32c of the length, the
    data, masked crc32c of the data (what TensorBoard's own reader checks)."""
    from tensorboardX.record_writer import masked_crc32c

    records = []
    with open(path, "rb") as f:
        while header := f.read(8):
            (length,) = struct.unpack("<Q", header)
            (length_crc,) = struct.unpack("<I", f.read(4))
            assert length_crc == masked_crc32c(header)
            data = f.read(length)
            (data_crc,) = struct.unpack("<I", f.read(4))
            assert data_crc == masked_crc32c(data)
            records.append(data)
    return records


def _events(folder: str) -> list:
    """The Event protos of all event files in a run folder, file after file (by name)."""
    from tensorboardX.proto import event_pb2

    files = sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*")))
    assert files, f"no event files in {folder}"
    events = []
    for path in files:
        for record in _records(path):
            event = event_pb2.Event()
            event.ParseFromString(record)
            events.append(event)
    return events


def _scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] of a run folder, in the order written."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for event in _events(folder):
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_one_run_folder_per_model_with_the_values_tags_and_steps(tmp_path):
    with logs.TensorBoard(str(tmp_path), RUNS) as tb:
        tb.write(10, "train", {"loss": [1.0, 2.0, 3.0], "rate": np.array([0.5, 0.25, 0.125])})
        tb.write(20, "train", {"loss": np.array([0.5, 1.5, 2.5], dtype=np.float32)})
        tb.write(20, "eval", {"distortion": jax.numpy.array([7.0, 8.0, 9.0])})
    root = tmp_path / "tensorboard"
    assert sorted(os.listdir(root)) == sorted(FOLDERS)
    for i, folder in enumerate(FOLDERS):
        scalars = _scalars(str(root / folder))
        assert scalars == {
            "train/loss": [(10, pytest.approx([1.0, 2.0, 3.0][i])), (20, pytest.approx([0.5, 1.5, 2.5][i]))],
            "train/rate": [(10, pytest.approx([0.5, 0.25, 0.125][i]))],
            "eval/distortion": [(20, pytest.approx([7.0, 8.0, 9.0][i]))],
        }


def test_non_finite_values_are_left_out(tmp_path):
    with logs.TensorBoard(str(tmp_path), RUNS) as tb:
        tb.write(1, "train", {"loss": [math.nan, 2.0, math.inf], "rate": [1.0, -math.inf, 3.0]})
    root = tmp_path / "tensorboard"
    assert _scalars(str(root / "beta1_seed0")) == {"train/rate": [(1, 1.0)]}
    assert _scalars(str(root / "beta0.5_seed0")) == {"train/loss": [(1, 2.0)]}
    assert _scalars(str(root / "beta0.25_seed1")) == {"train/rate": [(1, 3.0)]}


def test_values_must_be_one_per_model(tmp_path):
    with logs.TensorBoard(str(tmp_path), RUNS) as tb:
        with pytest.raises(ValueError, match="one value per model"):
            tb.write(1, "train", {"loss": [1.0, 2.0]})
        with pytest.raises(ValueError, match="one value per model"):
            tb.write(1, "train", {"loss": 1.0})


def test_runs_with_the_same_folder_are_refused(tmp_path):
    with pytest.raises(ValueError, match="repeated TensorBoard folders"):
        logs.TensorBoard(str(tmp_path), [(1.0, 0), (1, 0)])


def test_resume_adds_event_files_beside_the_old_ones(tmp_path):
    with logs.TensorBoard(str(tmp_path), RUNS[:1]) as tb:
        tb.write(1, "train", {"loss": [1.0]})
        tb.write(2, "train", {"loss": [2.0]})
    with logs.TensorBoard(str(tmp_path), RUNS[:1], resume_step=2) as tb:  # the same second: no overwrite
        tb.write(2, "train", {"loss": [20.0]})
    folder = tmp_path / "tensorboard" / "beta1_seed0"
    assert len(glob.glob(str(folder / "events.out.tfevents.*"))) == 2
    assert sorted(_scalars(str(folder))["train/loss"]) == [(1, 1.0), (2, 2.0), (2, 20.0)]
    # The resumed file tells TensorBoard to drop the older points at and after step 2.
    starts = [e.step for e in _events(str(folder)) if e.HasField("session_log")]
    assert starts == [2]


def test_tensorboard_reads_the_files_back_where_installed(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    with logs.TensorBoard(str(tmp_path), RUNS) as tb:
        tb.write(5, "eval", {"rate": [1.0, math.nan, 3.0]})
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard" / "beta0.25_seed1"))
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("eval/rate")] == [(5, 3.0)]


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    with logs.TensorBoard(str(tmp_path), RUNS) as tb:
        tb.write(1, "train", {"loss": [1.0, 2.0, 3.0]})
    assert not (tmp_path / "tensorboard").exists()


@pytest.mark.parametrize("how", ["sys.modules", "import"])
def test_missing_tensorboardx_is_a_config_error(tmp_path, monkeypatch, how):
    if how == "sys.modules":
        monkeypatch.setitem(sys.modules, "tensorboardX", None)  # makes `import tensorboardX` raise
    else:
        real_import = builtins.__import__

        def fake_import(name, *args, **kwargs):
            if name == "tensorboardX" or name.startswith("tensorboardX."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ConfigError) as info:
        logs.TensorBoard(str(tmp_path), RUNS)
    assert str(info.value) == "config.tensorboard = True needs tensorboardX: pip install 'echo-jax[tensorboard]'"
    assert not (tmp_path / "tensorboard").exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def stderr(monkeypatch):
    """Replaces sys.stderr with a StringIO; `stderr(tty=True)` makes it claim to be a terminal."""

    def replace(tty: bool = False) -> io.StringIO:
        stream = _Terminal() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        return stream

    monkeypatch.delenv(logs.PROGRESS_ENV, raising=False)
    return replace


def test_progress_is_quiet_when_stderr_is_not_a_terminal(stderr):
    stream = stderr(tty=False)
    bar = logs.progress(10)
    assert bar.disable
    bar.update(3)
    bar.close()
    assert stream.getvalue() == ""


def test_progress_shows_on_a_terminal_with_an_eta(stderr):
    stream = stderr(tty=True)
    bar = logs.progress(10, initial=2, desc="train")
    assert not bar.disable  # (closing sets it)
    bar.update(3)
    bar.close()
    text = stream.getvalue()
    assert "train" in text and "5/10" in text and "<" in text  # elapsed<remaining
    assert "step" in text


def test_progress_env_forces_it_on_or_off(stderr, monkeypatch):
    stream = stderr(tty=False)
    monkeypatch.setenv(logs.PROGRESS_ENV, "1")
    bar = logs.progress(4)
    assert not bar.disable
    bar.update(4)
    bar.close()
    assert "4/4" in stream.getvalue()

    stream = stderr(tty=True)
    monkeypatch.setenv(logs.PROGRESS_ENV, "0")
    bar = logs.progress(4)
    assert bar.disable
    bar.update(4)
    bar.close()
    assert stream.getvalue() == ""


def test_progress_is_quiet_on_other_processes(stderr, monkeypatch):
    stderr(tty=True)
    monkeypatch.setenv(logs.PROGRESS_ENV, "1")
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert logs.progress(4).disable


def test_progress_env_with_another_value_is_a_config_error(stderr, monkeypatch):
    stderr(tty=True)
    monkeypatch.setenv(logs.PROGRESS_ENV, "yes")
    with pytest.raises(ConfigError, match="ECHO_JAX_PROGRESS"):
        logs.progress(4)


def test_a_run_with_tensorboard_mirrors_metrics_jsonl(tmp_path):
    from echo_jax import defaults, train
    from tests.helpers import tiny

    config = tiny(defaults.rate_distortion_config(quick=True), betas="1,2", tensorboard=True)
    train.train_and_evaluate(config, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for m, beta in enumerate((1, 2)):
        scalars = _scalars(str(tmp_path / "tensorboard" / f"beta{beta}_seed0"))
        train_logged = [(r["step"], r["loss"][m]) for r in records if r["split"] == "train"]
        test_logged = [(r["step"], r["test"][m]["neg_elbo"]) for r in records if r["split"] == "test"]
        assert [s for s, _ in scalars["train/loss"]] == [s for s, _ in train_logged]
        np.testing.assert_allclose([v for _, v in scalars["train/loss"]], [v for _, v in train_logged], rtol=1e-6)
        np.testing.assert_allclose([v for _, v in scalars["test/neg_elbo"]], [v for _, v in test_logged], rtol=1e-6)
