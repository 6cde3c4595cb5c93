"""The labeled log lines of echo_jax.logs, and a run's: a banner, one line per model, speeds without compilation."""

import logging
import re
import time
import types

import jax

from echo_jax import defaults, logs, sweep, train
from tests.helpers import tiny


def test_one_labeled_line_per_model():
    lines = logs.train_lines(
        500,
        50000,
        "echo",
        [(1.0, 0), (0.5, 2)],
        {"rate": [24.1, 30.0], "distortion": [71.2, 60.25], "neg_elbo": [95.3, 90.25], "loss": [1, 2]},
        12.34,
    )
    assert lines == [
        "step   500/50000  echo beta=1 seed=0  rate 24.10 distortion 71.20 neg_elbo 95.30 (nats)  12.3 steps/s",
        "step   500/50000  echo beta=0.5 seed=2  rate 30.00 distortion 60.25 neg_elbo 90.25 (nats)  12.3 steps/s",
    ]
    (line,) = logs.train_lines(7, 10, "gaussian", [(4.0, 1)], {"rate": [1.0], "distortion": [2.0], "tc": [3.0]}, None)
    assert line == "step  7/10  gaussian beta=4 seed=1  rate 1.00 distortion 2.00 tc 3.00 (nats)"


def test_models_and_durations_in_words():
    assert logs.describe_models("echo", [(8.0, 0), (8.0, 1), (8.0, 2)]) == "3 echo models: beta=8 seeds 0,1,2"
    assert logs.describe_models("gaussian", [(1.0, 0)]) == "1 gaussian model: beta=1 seed 0"
    assert [logs.duration(s) for s in (42, 600, 4 * 3600)] == ["42 s", "10 min", "4.0 h"]


def test_runs_evaluations_and_devices_in_words():
    assert logs.models_label("echo", [(1.0, 0), (1.0, 1), (1.0, 2)]) == "echo beta=1 seeds 0,1,2"
    assert logs.models_label("gaussian+vamp", [(0.5, 0), (2.0, 0)]) == "gaussian+vamp beta=0.5,2 seed 0"
    rows = [{"rate": 1.0, "distortion": 2.0, "neg_elbo": 3.0, "loss": 4.0, "iwae_nll": 2.5}]
    assert logs.evaluation_lines(40, 500, "gaussian+std_normal", [(4.0, 1)], rows) == [
        "test at step  40/500  gaussian+std_normal beta=4 seed=1  rate 1.00 distortion 2.00 neg_elbo 3.00 "
        "iwae_nll 2.50 (nats)"
    ]
    (line,) = logs.evaluation_lines(500, 500, "echo", [(1.0, 0)], [{"rate": 1.0}], final=True)
    assert line == "final test at step 500/500  echo beta=1 seed=0  rate 1.00 (nats)"
    cpu = types.SimpleNamespace(platform="cpu", device_kind="cpu", process_index=0)
    h200 = [types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H200", process_index=p) for p in (0, 0, 1, 1)]
    assert logs.devices_in_words([cpu]) == "1 CPU device"
    assert logs.devices_in_words(h200) == "4 GPU devices (NVIDIA H200) on 2 processes"


# ----------------------------------------------------------------------------------------------- a run's lines

COMPILING_SECONDS = 3.0  # the stand-in compilation of the first dispatch


def test_a_run_names_its_models_in_every_line_and_times_no_compilation(tmp_path, caplog, monkeypatch):
    config = tiny(defaults.rate_distortion_config(quick=True), betas="0.5,2", num_epochs=2, eval_every_epochs=1)
    step, updates, bars = sweep.Population.step, [], []

    def slow_first_step(population, batch):  # as if the first dispatch compiled for a while
        if not updates:
            time.sleep(COMPILING_SECONDS)
        step(population, batch)

    def progress(total, *, initial=0, desc="", unit="step"):
        bars.append((desc, initial, len(updates)))
        return progress_bar(total, initial=initial, desc=desc, unit=unit)

    progress_bar = logs.progress
    monkeypatch.setattr(sweep.Population, "step", slow_first_step)
    monkeypatch.setattr(train.logs, "progress", progress)
    with caplog.at_level(logging.INFO, logger="absl"):
        train.train_and_evaluate(config, str(tmp_path), on_step=updates.append)
    lines = [r.getMessage() for r in caplog.records if r.name == "absl"]

    # The banner: what runs, where, how long, where the results go, and (once timed) the expected time.
    assert "training 2 echo models: beta=0.5,2 seed 0" in lines
    assert any(line.startswith(f"  on {logs.devices_in_words(jax.devices())} (sweep_strategy ") for line in lines)
    assert "  8 steps (2 epochs of 4 steps)" in lines
    assert any(line.startswith(f"  results in {tmp_path} ") for line in lines)
    assert [line for line in lines if re.fullmatch(r"echo beta=0.5,2 seed 0: .* expected training time \d+ s .*", line)]

    # One labeled line per model and log period, its speed timed after the compilation.
    train_lines = [line for line in lines if line.startswith("step ")]
    pattern = r"step (\d)/8  echo beta=(0\.5|2) seed=0  rate \S+ distortion \S+ neg_elbo \S+ \(nats\)  (\S+) steps/s"
    matches = [re.fullmatch(pattern, line) for line in train_lines]
    assert all(matches), train_lines
    assert [(m[1], m[2]) for m in matches] == [(s, b) for s in "2468" for b in ("0.5", "2")]
    assert min(float(m[3]) for m in matches) > 2 / COMPILING_SECONDS  # counting it would give at most that

    # The test evaluations, one labeled line per model, the final one named so.
    tests = [line for line in lines if "test at step" in line]
    heads = [re.match(r"(.*)  echo beta=(\S+) seed=0  rate ", line).groups() for line in tests]
    assert heads == [
        ("test at step 4/8", "0.5"),
        ("test at step 4/8", "2"),
        ("final test at step 8/8", "0.5"),
        ("final test at step 8/8", "2"),
    ]

    # The training bar names the run and starts after the first (compiling) dispatch, so its ETA counts no
    # compilation.
    assert [bar for bar in bars if bar[0] != "evaluate"] == [("echo beta=0.5,2 seed 0", 1, 1)]
