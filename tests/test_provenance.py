"""Provenance per run: results record the commits and environments that trained them, and the report marks the runs
trained from a work tree with uncommitted changes."""

import json
import os
import signal

import pytest

from echo_jax import campaign, defaults, identity, train
from tests.helpers import tiny
from tests.test_campaign import write_campaign
from tests.test_reproduction import write_report, write_run


def test_the_report_marks_runs_trained_from_a_dirty_tree(tmp_path):
    path = write_campaign(tmp_path)
    runs = campaign.plan(campaign.load_config_file(path), campaign.config_root(path))
    results_dir = str(tmp_path / "results")
    for run in runs[:4]:  # echo and vae at beta 1, seeds 0 and 1
        write_run(results_dir, run, {"rate": 10.0, "distortion": 90.0, "neg_elbo": 100.0}, [(10.0, 100.0)])
    dirty = {(r.variant, r.seed): r for r in runs[:4]}
    for (variant, seed), commits, diff in [
        (("echo", 1), ["abc+dirty"], True),
        (("vae", 0), ["abc+dirty", "def"], False),
    ]:
        directory = os.path.join(results_dir, dirty[(variant, seed)].path)
        with open(os.path.join(directory, "results.json")) as f:
            results = json.load(f)
        results["run"].update(commit=commits[-1], commits=commits)  # vae: resumed at a clean commit, still dirty
        with open(os.path.join(directory, "results.json"), "w") as f:
            json.dump(results, f)
        if diff:
            open(os.path.join(directory, "code-0123abcd.diff"), "w").write("# uncommitted changes on top of abc\n")
    _, text = write_report(path, runs, results_dir, tmp_path / "docs" / "reproduction.md")
    (line,) = [line for line in text.splitlines() if line.startswith("**Uncommitted changes.**")]
    assert "2 run(s) were trained from a work tree with uncommitted changes" in line
    assert "echo mnist_sample beta 1 seed(s) 1" in line and "vae mnist_sample beta 1 seed(s) 0" in line
    assert "1 of them keep the diff beside their results" in line


def test_a_report_of_clean_runs_has_no_such_line(tmp_path):
    path = write_campaign(tmp_path)
    runs = campaign.plan(campaign.load_config_file(path), campaign.config_root(path))
    write_run(str(tmp_path / "results"), runs[0], {"rate": 10.0, "distortion": 90.0, "neg_elbo": 100.0}, [(10.0, 100)])
    _, text = write_report(path, runs, str(tmp_path / "results"), tmp_path / "docs" / "reproduction.md")
    assert "Uncommitted changes" not in text


def test_a_runs_results_record_every_commit_that_trained_it(tmp_path, monkeypatch):
    config = tiny(defaults.rate_distortion_config(quick=True), num_epochs=2, checkpoint_every_steps=3, iwae_samples=0)
    monkeypatch.setattr(identity, "code_commit", lambda: "a" * 40)
    here = identity.environment()
    elsewhere = {**here, "jax": "0.0.1", "cpu": "another CPU"}

    def stop(step):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(train.RunInterrupted):
        train.train_and_evaluate(config, str(tmp_path), on_step=stop)
    monkeypatch.setattr(identity, "code_commit", lambda: "b" * 40 + "+dirty")  # resumed at another commit
    monkeypatch.setattr(identity, "environment", lambda: elsewhere)  # and on another machine
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["provenance"] == {"commits": ["a" * 40, "b" * 40 + "+dirty"], "environments": [here, elsewhere]}
    assert {"jax", "jaxlib", "flax", "optax", "numpy", "backend", "device", "cpu"} <= set(here)
    with open(tmp_path / "models" / "beta1_seed0" / "params.json") as f:
        assert json.load(f)["commit"] == "b" * 40 + "+dirty"  # the sidecar: the commit that wrote the model
    assert train.train_and_evaluate(config, str(tmp_path))["provenance"] == results["provenance"]


def test_the_report_names_the_environments_that_trained_the_runs(tmp_path):
    path = write_campaign(tmp_path)
    runs = campaign.plan(campaign.load_config_file(path), campaign.config_root(path))
    results_dir = str(tmp_path / "results")
    here = {"jax": "0.10.2", "flax": "0.12.8", "optax": "0.2.8", "backend": "cpu", "device": "cpu", "cpu": "EPYC"}
    gpu = {**here, "backend": "gpu", "device": "NVIDIA H200"}
    for run, environments in zip(runs[:4], [[here], [here], [here, gpu], None]):  # the last: an older run
        write_run(results_dir, run, {"rate": 10.0, "distortion": 90.0, "neg_elbo": 100.0}, [(10.0, 100.0)])
        directory = os.path.join(results_dir, run.path)
        with open(os.path.join(directory, "results.json")) as f:
            results = json.load(f)
        if environments:
            results["run"]["environments"] = environments
        with open(os.path.join(directory, "results.json"), "w") as f:
            json.dump(results, f)
    _, text = write_report(path, runs, results_dir, tmp_path / "docs" / "reproduction.md")
    (line,) = [line for line in text.splitlines() if line.startswith("**Environment.**")]
    assert line == (
        "**Environment.** jax 0.10.2, flax 0.12.8, optax 0.2.8 on cpu (cpu, CPU EPYC): 3 run(s); jax 0.10.2, flax "
        "0.12.8, optax 0.2.8 on gpu (NVIDIA H200, CPU EPYC): 1 run(s); 1 run(s) trained before environments were "
        "recorded."
    )
