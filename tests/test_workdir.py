"""The work directory's metrics log on resume (records after the checkpoint go, a torn last line goes with a
warning, corruption before the last line is an error, not a traceback) and its lock (one process at a time)."""

import json

import pytest

from echo_jax import workdir as workdir_lib
from echo_jax.errors import UserError, WorkdirError

RUNS = [(1.0, 0), (2.0, 0)]


def record(step, split="train", betas=(1.0, 2.0), seeds=(0, 0)):
    return json.dumps({"split": split, "step": step, "beta": list(betas), "seed": list(seeds), "loss": 1.5}) + "\n"


@pytest.fixture
def warnings(monkeypatch):
    logged = []
    monkeypatch.setattr(workdir_lib.logging, "warning", lambda msg, *args: logged.append(msg % args))
    return logged


def test_records_logged_after_the_checkpoint_are_dropped_and_others_kept(tmp_path, warnings):
    path = tmp_path / "metrics.jsonl"
    other = record(9, seeds=(1, 1))  # another chunk's models: not this population's to trim
    path.write_text(record(2) + record(4) + other + record(6) + record(8))
    workdir_lib.trim_metrics(str(path), RUNS, step=4)
    assert path.read_text() == record(2) + record(4) + other
    assert warnings == []


@pytest.mark.parametrize(
    "torn",
    [
        record(6)[:17],  # cut mid-record
        record(6)[:-1][:-1],  # cut just before the closing brace
        "\x00" * 40,  # a crash that left the appended block zero-filled
        '{"split": "tr\xe9',  # a non-UTF-8 byte (written below as latin-1)
    ],
    ids=["mid-record", "before-brace", "zero-filled", "non-utf8"],
)
def test_a_torn_last_line_is_dropped_with_one_warning(tmp_path, warnings, torn):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes((record(2) + record(4) + torn).encode("latin-1"))
    workdir_lib.trim_metrics(str(path), RUNS, step=4)
    assert path.read_text() == record(2) + record(4)
    assert len(warnings) == 1
    assert "torn last line 3" in warnings[0] and str(path) in warnings[0]
    workdir_lib.trim_metrics(str(path), RUNS, step=4)  # the file is whole again: nothing more to say
    assert len(warnings) == 1


def test_a_torn_last_line_is_dropped_with_the_records_after_the_checkpoint(tmp_path, warnings):
    path = tmp_path / "metrics.jsonl"
    path.write_text(record(2) + record(4) + record(6) + record(8)[:20])
    workdir_lib.trim_metrics(str(path), RUNS, step=2)
    assert path.read_text() == record(2)
    assert len(warnings) == 1


def test_a_whole_last_record_cut_before_its_newline_is_kept_and_gets_one(tmp_path, warnings):
    # Without the newline, the next append would join it into one unparseable line.
    path = tmp_path / "metrics.jsonl"
    path.write_text(record(2) + record(4)[:-1])
    workdir_lib.trim_metrics(str(path), RUNS, step=4)
    assert path.read_text() == record(2) + record(4)
    assert warnings == []


@pytest.mark.parametrize(
    "bad",
    [record(4)[:17] + "\n", "\n", "[1, 2]\n", record(4)[:-1] + record(6)],
    ids=["torn", "blank", "list", "joined"],
)
def test_an_unreadable_line_before_the_last_is_an_error_naming_the_file_line_and_fix(tmp_path, warnings, bad):
    path = tmp_path / "metrics.jsonl"
    content = record(2) + bad + record(8)
    path.write_text(content)
    with pytest.raises(WorkdirError) as raised:
        workdir_lib.trim_metrics(str(path), RUNS, step=4)
    message = str(raised.value)
    assert isinstance(raised.value, UserError)  # the command lines print it as one line
    assert "\n" not in message
    assert f"{path} line 2 " in message and "delete that line" in message and "--workdir" in message
    assert path.read_text() == content  # nothing rewritten
    assert warnings == []


def test_a_missing_or_empty_log_is_left_alone(tmp_path):
    workdir_lib.trim_metrics(str(tmp_path / "metrics.jsonl"), RUNS, step=0)
    assert not (tmp_path / "metrics.jsonl").exists()
    (tmp_path / "metrics.jsonl").write_text("")
    workdir_lib.trim_metrics(str(tmp_path / "metrics.jsonl"), RUNS, step=0)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


class Killed(Exception):
    """Stands for the run being killed."""


def test_a_run_killed_mid_append_resumes(tmp_path):
    from echo_jax import defaults, train
    from tests.helpers import tiny

    def kill_at_step_5(step):
        if step == 5:
            raise Killed

    config = tiny(defaults.rate_distortion_config(quick=True), num_epochs=2, checkpoint_every_steps=3)
    with pytest.raises(Killed):
        train.train_and_evaluate(config, str(tmp_path), on_step=kill_at_step_5)
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:
        f.write(record(5)[:25])  # the kill landed mid-append
    train.train_and_evaluate(config, str(tmp_path))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 8  # each step once, to the end


# ----------------------------------------------------------------------------------------------- the lock

HOLD = """
import sys, time
from echo_jax import workdir
held = workdir.lock(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def hold_lock(directory):
    """Another process that holds `directory`'s lock until it is killed."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], cwd=root, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_process_is_refused_naming_the_owner_before_it_writes_and_a_killed_owner_holds_nothing(tmp_path):
    import socket

    from echo_jax import defaults, train
    from tests.helpers import tiny

    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(workdir_lib.WorkdirBusy) as refused:
            train.train_and_evaluate(tiny(defaults.rate_distortion_config(quick=True)), str(tmp_path))
        message = str(refused.value)
        assert f"in use by process {holder.pid} on host {socket.gethostname()}" in message and "\n" not in message
        assert isinstance(refused.value, UserError)  # the command lines print it as one line, exit status 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lock"]
    finally:
        holder.kill()  # SIGKILL: the process cleans nothing up; the OS lock goes with it
        holder.wait()
    workdir_lib.lock(str(tmp_path)).release()


def test_the_lock_is_reentrant_within_a_process_and_released_with_the_last_hold(tmp_path):
    import subprocess
    import sys

    outer = workdir_lib.lock(str(tmp_path))
    with workdir_lib.lock(str(tmp_path)):  # a run inside a campaign program or a quickstart
        pass
    probe = [sys.executable, "-c", "import sys; from echo_jax import workdir; workdir.lock(sys.argv[1])", str(tmp_path)]
    assert subprocess.run(probe, capture_output=True).returncode != 0  # still held by `outer`
    outer.release()
    outer.release()  # a second release does nothing
    assert subprocess.run(probe, capture_output=True).returncode == 0


def test_a_workdir_the_lock_created_and_nothing_wrote_into_is_removed(tmp_path):
    with workdir_lib.lock(str(tmp_path / "new")):
        assert (tmp_path / "new" / "lock").exists()
    assert not (tmp_path / "new").exists()
    with workdir_lib.lock(str(tmp_path / "used")):
        (tmp_path / "used" / "config.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["config.json", "lock"]
