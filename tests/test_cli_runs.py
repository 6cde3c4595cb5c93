"""Runs through the command line: one work directory, one process; Ctrl-C says where the run stopped; a
workdir of another run (beta 0, then beta 1) is refused, never answered with the other run's numbers."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

from echo_jax import workdir as workdir_lib
from tests.helpers import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RD = [sys.executable, "-m", "experiments.rate_distortion", "--config", "configs/rate_distortion/echo.py:quick"]
TINY = [
    "--config.num_train_examples=64",
    "--config.num_test_examples=32",
    "--config.batch_size=16",
    "--config.model.mlp_hidden=(32,)",
    "--config.model.latent_dim=4",
    "--config.iwae_samples=0",
]
ENV = {**{k: v for k, v in os.environ.items() if k != "ECHO_JAX_TRACEBACK"}, "ECHO_JAX_PROGRESS": "0"}


def lines(text):
    return [line for line in text.splitlines() if line.strip()]


def test_a_second_process_on_a_workdir_is_refused_and_ctrl_c_saves_and_says_how_to_resume(tmp_path):
    workdir = tmp_path / "run"
    args = RD + TINY + ["--config.num_train_steps=100000", "--config.log_every_steps=1", "--workdir", str(workdir)]
    first = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (workdir / "metrics.jsonl").exists() or not (workdir / "metrics.jsonl").read_text().strip():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.5)

        second = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        assert lines(second.stderr) == [
            f"error: workdir {workdir} is in use by process {first.pid} on host {socket.gethostname()}: one "
            "process at a time trains a work directory; wait for it to end, or use another --workdir"
        ]

        first.send_signal(signal.SIGINT)  # Ctrl-C
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    last = lines(stderr)[-1]
    assert last.startswith("stopped at step ") and last.endswith(
        " of 100000; checkpoint saved; run the same command to resume"
    )
    step = int(last.split()[3])
    checkpoints = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert max(checkpoints) == step > 0
    workdir_lib.lock(str(workdir)).release()  # the stopped run holds nothing


def test_beta_0_then_beta_1_on_one_workdir_is_refused(tmp_path):
    # The commands: the second used to exit 0 and print the beta-0 model's numbers as its own.
    zero = load_config(os.path.join(REPO, "configs", "rate_distortion", "echo.py"), "quick")
    zero.beta, zero.num_train_steps = 0.0, 40
    workdir_lib.prepare(zero, str(tmp_path))  # what the first command leaves (its results.json aside)
    (tmp_path / "results.json").write_text(json.dumps({"experiment": "rate_distortion", "results": []}))
    args = RD + ["--workdir", str(tmp_path), "--config.beta=1", "--config.num_train_steps=40"]
    out = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]
    assert lines(out.stderr) == [
        f"error: workdir {tmp_path} holds another run (its config differs in: beta); use a new --workdir, or "
        "delete that one to start over"
    ]
    assert out.stdout == ""
