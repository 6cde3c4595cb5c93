"""Faults injected into runs, their files and the command lines: each ends in one line naming the problem and the
fix (a `UserError`), and leaves nothing half-written behind (no results.json with bad numbers, no temporary
checkpoint folders, the damaged file as it was).

Training is costly on small machines: one finished tiny run (a module fixture) is copied for every case that
damages a finished work directory, and only the divergence and disk-full cases train at all.
"""

import errno
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from echo_jax import campaign, defaults, files, report, train, validation
from echo_jax.checkpoints import Checkpointer
from echo_jax.errors import ConfigError, DiskFullError, DivergedError, WorkdirError
from tests.helpers import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_sweep(**overrides):
    return tiny(defaults.rate_distortion_config(quick=True), betas="1,2", iwae_samples=0, **overrides)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-model run (a healthy one: the divergence guard must let it finish)."""
    path = tmp_path_factory.mktemp("finished") / "run"
    train.train_and_evaluate(tiny_sweep(), str(path))
    assert (path / "results.json").exists()
    return path


@pytest.fixture
def run_copy(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run", ignore=shutil.ignore_patterns("lock"))
    return tmp_path / "run"


def snapshot(directory):
    """Every file under `directory` with its content, to show that a failed command wrote nothing."""
    return {
        os.path.relpath(os.path.join(root, name), directory): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(directory)
        for name in names
        if name != "lock"
    }


def edit_results(change):
    def damage(text):
        content = json.loads(text)
        change(content)
        return json.dumps(content)

    return damage


def nan_rate(content):
    content["results"][0]["test"]["rate"] = float("nan")


# ------------------------------------------------------------------ damaged files of a finished work directory

# (case, file, damage: old text -> new text, the one line's key words)
DAMAGED = [
    ("config_empty_object", "config.json", lambda t: "{}", r"config\.json is not a run's config"),
    ("config_list", "config.json", lambda t: "[1, 2]", r"config\.json holds a JSON list, not an object"),
    ("config_truncated", "config.json", lambda t: t[: len(t) // 2], r"config\.json is not valid JSON"),
    ("results_empty_object", "results.json", lambda t: "{}", r"results\.json cannot be trusted: it has no list"),
    ("results_list", "results.json", lambda t: "[1, 2]", r"results\.json holds a JSON list, not an object"),
    ("results_truncated", "results.json", lambda t: t[: len(t) // 2], r"results\.json is not valid JSON"),
    ("results_not_utf8", "results.json", lambda t: "\udcff", r"results\.json is not valid JSON"),
    ("results_nan", "results.json", edit_results(nan_rate), r"results\[0\]\.test\.rate is not a finite number"),
    (
        "results_other_models",
        "results.json",
        edit_results(lambda c: c["results"].pop()),
        r"holds the \(beta, seed\) models \[\(1\.0, 0\)\], its config trains \[\(1\.0, 0\), \(2\.0, 0\)\]",
    ),
    (
        "results_no_test_terms",
        "results.json",
        edit_results(lambda c: c["results"][1].pop("test")),
        r"results\[1\] is not a model's row",
    ),
]


def _damage(directory, name, damage):
    path = directory / name
    path.write_bytes(damage(path.read_text()).encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("name, damage, expected", [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_a_damaged_file_of_a_finished_run_is_one_line_and_nothing_is_rewritten(run_copy, name, damage, expected):
    _damage(run_copy, name, damage)
    before = snapshot(run_copy)
    with pytest.raises(WorkdirError, match=expected) as raised:
        train.train_and_evaluate(tiny_sweep(), str(run_copy))
    message = str(raised.value)
    assert "\n" not in message and str(run_copy / name) in message
    assert re.search(r"delete it|restore it|new --workdir", message)  # the fix
    assert snapshot(run_copy) == before
    # The report reads the same files and refuses them alike.
    with pytest.raises(WorkdirError, match=expected):
        report.load_results([str(run_copy)])


def test_deleting_an_untrusted_results_json_as_told_writes_it_again_from_the_checkpoint(finished, run_copy):
    _damage(run_copy, "results.json", edit_results(nan_rate))
    with pytest.raises(WorkdirError, match="delete it and run the same command again"):
        train.train_and_evaluate(tiny_sweep(), str(run_copy))
    os.remove(run_copy / "results.json")
    rewritten = train.train_and_evaluate(tiny_sweep(), str(run_copy))
    strip = lambda results: [{k: v for k, v in row.items() if k != "seconds"} for row in results["results"]]  # noqa: E731
    assert strip(rewritten) == strip(json.loads((finished / "results.json").read_text()))


# ------------------------------------------------------------------ the work directory itself


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / "run"
    path.write_text("notes")
    with pytest.raises(WorkdirError, match=r"workdir .*run is a file, not a directory"):
        train.train_and_evaluate(tiny_sweep(), str(path))
    assert path.read_text() == "notes"


@pytest.fixture
def read_only(monkeypatch):
    """Makes the directories added to the returned set read-only for this process, as a read-only mount does
    (chmod cannot, for root): every open of a file there for writing fails with EROFS."""
    directories = set()
    real_open = os.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def guarded_open(path, flags, *args, **kwargs):
        if flags & writing and any(os.path.abspath(path).startswith(str(d) + os.sep) for d in directories):
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    return directories


def test_a_finished_read_only_workdir_still_reports_its_results_and_writes_nothing(run_copy, read_only):
    expected = json.loads((run_copy / "results.json").read_text())
    report.write_report(str(run_copy), expected)  # results.md as the command line leaves it
    read_only.add(run_copy)
    before = snapshot(run_copy)
    results = train.train_and_evaluate(tiny_sweep(), str(run_copy))
    table = report.write_report(str(run_copy), results)  # what experiments.rate_distortion prints
    assert results == expected and "| echo | mnist_sample | 1 | 0 |" in table
    assert snapshot(run_copy) == before
    # A changed report cannot be written there: one line, the report's folder and the fix.
    with pytest.raises(WorkdirError, match=r"results\.md cannot be written \(Read-only file system\).*--out"):
        report.write_report(str(run_copy), results, note="another note")


def test_an_unfinished_read_only_workdir_is_one_line_before_anything_is_read(run_copy, read_only):
    os.remove(run_copy / "results.json")
    read_only.add(run_copy)
    before = snapshot(run_copy)
    with pytest.raises(WorkdirError, match=r"is not writable \(Read-only file system\) and its run is not finished"):
        train.train_and_evaluate(tiny_sweep(), str(run_copy))
    assert snapshot(run_copy) == before


def test_the_report_refuses_a_workdir_given_twice(run_copy):
    with pytest.raises(WorkdirError, match=r"is given twice .*give each work directory once"):
        report.load_results([str(run_copy), str(run_copy) + "/"])


# ------------------------------------------------------------------ a full disk


def _fail_json_writes(monkeypatch):
    """orbax's write of a step's meta (after its arrays) fails as on a full disk."""

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full)


def _fail_fsync(monkeypatch):
    """`files.write_atomic` fails as on a full disk (writes are buffered: a full disk shows at the flush)."""

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)


# (case, the fault, the folder the line names)
DISK_FULL = [("checkpoint", _fail_json_writes, "checkpoints"), ("config_json", _fail_fsync, "run")]


@pytest.mark.parametrize("fault, where", [c[1:] for c in DISK_FULL], ids=[c[0] for c in DISK_FULL])
def test_a_full_disk_is_one_line_and_leaves_no_temporary_files(tmp_path, monkeypatch, fault, where):
    fault(monkeypatch)
    path = tmp_path / "run"
    with pytest.raises(DiskFullError, match=rf"the disk is full: writing in .*{where} failed .*free some space"):
        train.train_and_evaluate(tiny_sweep(checkpoint_every_steps=2, num_train_steps=3), str(path))
    left = [os.path.relpath(os.path.join(r, n), tmp_path) for r, ds, fs in os.walk(tmp_path) for n in ds + fs]
    assert not [n for n in left if "tmp" in n], left
    assert not (path / "results.json").exists()


def test_a_full_disk_leaves_a_metrics_log_without_a_torn_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    files.append_jsonl(str(path), {"step": 1})

    class Full:
        def __init__(self, f):
            self.f = f

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.f.close()

        def write(self, text):
            self.f.write(text[:5])  # part of the line reaches the file, then the disk is full
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: Full(real_open(*a, **k)))
    with pytest.raises(OSError):
        files.append_jsonl(str(path), {"step": 2})
    monkeypatch.undo()
    assert path.read_text() == '{"step": 1}\n'


# ------------------------------------------------------------------ divergence


def test_a_run_whose_learning_rate_is_absurd_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    # Adam at 30 blows Echo's loss up to about 1e6 nats at step 2 with every value finite (the non-finite guard
    # would not see it), and it stays above 10x its best (550) at step 3.
    config = tiny_sweep(learning_rate=30.0, lr_schedule="constant", num_epochs=2, log_every_steps=1)
    config.checkpoint_every_steps = 1
    with pytest.raises(DivergedError) as raised:
        train.train_and_evaluate(config, str(tmp_path))
    message = str(raised.value)
    assert "\n" not in message
    assert re.search(
        r"the training loss diverged by step 3, above 10x its best at two log periods in a row, for \(beta, seed\) "
        r"\(1\.0, 0\): [0-9.e+]+ against a best of 5\d\d\.\d; \(2\.0, 0\): .*the last good checkpoint \(step 1\) is "
        r"kept in .*Lower learning_rate",
        message,
    ), message
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["1"]  # none while the loss was suspect (step 2)
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "models").exists()


# ------------------------------------------------------------------ checkpoints


def test_a_checkpoint_whose_arrays_changed_on_disk_fails_its_checksum_and_an_old_one_without_one_restores(tmp_path):
    state = {"w": np.arange(6, dtype=np.float32)}
    with Checkpointer(tmp_path / "a") as saved:
        saved.save(1, state, {"step": 1})
        saved.save(2, state, {"step": 2})
    with Checkpointer(tmp_path / "b") as other:
        other.save(2, {"w": np.ones(6, np.float32)}, {"step": 2})
    # Another checkpoint's arrays (valid files, other values) in place of step 2's.
    shutil.rmtree(tmp_path / "a" / "2" / "state")
    shutil.copytree(tmp_path / "b" / "2" / "state", tmp_path / "a" / "2" / "state")
    with Checkpointer(tmp_path / "a") as damaged:
        with pytest.raises(
            WorkdirError,
            match=r"checkpoint .*a/2 fails its checksum.*delete that folder to resume .*"
            r"from step 1",
        ):
            damaged.restore(state)
        restored, meta = damaged.restore(state, step=1)
    assert meta == {"step": 1} and np.array_equal(restored["w"], state["w"])
    # A checkpoint saved before checkpoints carried a checksum restores without one.
    meta_file = tmp_path / "b" / "2" / "meta" / "metadata"
    held = json.loads(meta_file.read_text())
    del held["state_sha256"]
    meta_file.write_text(json.dumps(held))
    with Checkpointer(tmp_path / "b") as old:
        restored, meta = old.restore(state)
    assert meta == {"step": 2} and np.array_equal(restored["w"], np.ones(6))


# ------------------------------------------------------------------ campaigns

CAMPAIGN = """
import ml_collections
from echo_jax.campaign import group

def get_config():
    c = ml_collections.ConfigDict()
    c.name = "tiny"
    c.groups = (group("A", [("echo", "{rd}/echo.py:quick")], betas=(1,), seeds=(0, 1)),)
    return c
"""


def set_config_field(text):
    config = json.loads(text)
    config["learning_rate"] = 0.5  # another run's config in this run's folder
    return json.dumps(config)


# (case, file, damage, the reason --status gives)
CAMPAIGN_DAMAGED = [
    ("results_truncated", "results.json", lambda t: t[:20], r"results\.json is not valid JSON"),
    ("results_list", "results.json", lambda t: "[1, 2]", r"results\.json holds a JSON list"),
    ("results_nan", "results.json", edit_results(nan_rate), r"results\[0\]\.test\.rate is not a finite number"),
    (
        "results_other_seed",
        "results.json",
        edit_results(lambda c: c["results"][0].update(seed=7)),
        r"holds the \(beta, seed\) models \[\(1\.0, 7\)\]",
    ),
    ("config_empty_object", "config.json", lambda t: "{}", r"config\.json is not a run's config"),
    ("config_other_run", "config.json", set_config_field, r"config\.json's run key is \w+, not the folder's"),
]


@pytest.fixture
def campaign_results(tmp_path):
    """A campaign of two runs whose results folders hold what the runner writes (numbers made up)."""
    path = tmp_path / "configs" / "campaigns" / "tiny.py"
    path.parent.mkdir(parents=True)
    path.write_text(CAMPAIGN.format(rd=os.path.join(REPO, "configs", "rate_distortion")))
    spec = campaign.load_config_file(str(path))
    runs = campaign.plan(spec, campaign.config_root(str(path)))
    results = tmp_path / "results"
    for run in runs:
        folder = results / run.path
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(run.config.to_json_best_effort())
        row = {"beta": run.beta, "seed": run.seed, "test": {"rate": 1.5, "distortion": 90.0}}
        (folder / "results.json").write_text(json.dumps({"experiment": "rate_distortion", "results": [row]}))
    return spec, runs, results


@pytest.mark.parametrize(
    "name, damage, reason", [c[1:] for c in CAMPAIGN_DAMAGED], ids=[c[0] for c in CAMPAIGN_DAMAGED]
)
def test_a_campaign_run_with_a_damaged_file_is_pending_and_status_says_why(campaign_results, name, damage, reason):
    spec, runs, results = campaign_results
    assert sorted(campaign.finished_runs(str(results))) == sorted(r.key for r in runs)  # as written: both done
    _damage(results / runs[1].path, name, damage)
    done, rejected = campaign.scan_results(str(results))
    assert list(done) == [runs[0].key] and re.search(reason, rejected[runs[1].key])
    assert not campaign.is_done(runs[1], done)
    lines = campaign.status_lines(spec, runs, done, rejected)
    assert lines[0].startswith("group A: 1/2 runs done")
    assert re.fullmatch(rf"  pending \(.*{reason}.*\): echo mnist_sample beta=1 seed=1", lines[1]), lines


# ------------------------------------------------------------------ configs and flags


def test_a_config_that_is_not_a_config_dict_is_one_line():
    with pytest.raises(ConfigError, match=r"get_config\(\) returned a dict, not an ml_collections\.ConfigDict"):
        validation.validate_config({"dataset": "mnist"})


def test_a_beta_listed_twice_is_refused():
    with pytest.raises(ConfigError, match=r"config\.betas = '1,2,1': beta 1 is listed twice; list each beta once"):
        validation.validate_config(tiny(defaults.rate_distortion_config(quick=True), betas="1,2,1"))


@pytest.mark.parametrize("minutes", [0, -5, float("nan")])
def test_a_campaign_time_budget_must_be_positive(campaign_results, tmp_path, minutes):
    spec, _, results = campaign_results
    with pytest.raises(ConfigError, match="give a time budget of more than 0 minutes"):
        campaign.run_campaign(
            spec, root=REPO, results_dir=str(results), work_dir=str(tmp_path / "w"), max_minutes=minutes
        )
    assert not (tmp_path / "w").exists()


# The command lines print these as one line, `error: ...`, with exit status 1.
NOT_A_CONFIG = "def get_config(arg=None):\n    return {'dataset': 'mnist'}\n"
CLI = [
    (
        "report_truncated_results",
        ["-m", "experiments.report", "--workdir", "{run}"],
        r"error: .*results\.json is not valid JSON",
    ),
    (
        "not_a_config_dict",
        ["-m", "experiments.rate_distortion", "--config", "{bad}", "--workdir", "{tmp}/w"],
        r"error: the config file's get_config\(\) returned a dict",
    ),
    (
        "campaign_not_a_config_dict",
        ["-m", "experiments.campaign", "--campaign", "{bad}", "--status"],
        r"error: the campaign file's get_config\(\) returned a dict",
    ),
]


@pytest.mark.parametrize("args, expected", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_command_line_faults_are_one_line(run_copy, tmp_path, args, expected):
    _damage(run_copy, "results.json", lambda t: t[:30])
    (tmp_path / "bad.py").write_text(NOT_A_CONFIG)
    names = {"run": str(run_copy), "bad": str(tmp_path / "bad.py"), "tmp": str(tmp_path)}
    args = [a.format(**names) for a in args]
    env = {k: v for k, v in os.environ.items() if k != "ECHO_JAX_TRACEBACK"}
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert re.match(expected, last) and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "w").exists()
